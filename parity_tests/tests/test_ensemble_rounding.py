"""The ensemble's members round each parametrised layer's output another way
(parity_tests/engine/bounds/rounding.py): by at most one ulp, member 0 not at all, and
the same entries the same way whether the members run vmapped or in turn."""
import numpy as np
import pytest
import torch
from torch.func import functional_call, vmap

from parity_tests.engine.bounds.rounding import LayerRounding

MEMBERS = 4


def _model(dtype):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).to(dtype)


def _ulps(moved, plain):
    """Each entry's move in ulps of the plain value (0, +1 or -1 for a one-ulp move)."""
    up, down = torch.nextafter(plain, torch.tensor(np.inf, dtype=plain.dtype)), \
        torch.nextafter(plain, torch.tensor(-np.inf, dtype=plain.dtype))
    return (moved == up).int() - (moved == down).int() + 9 * ((moved != up) & (moved != down) & (moved != plain)).int()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_members_move_each_layer_output_by_one_ulp_member_0_by_none(dtype):
    x = torch.randn(6, 5, dtype=dtype, generator=torch.Generator().manual_seed(1))
    model, first = _model(dtype), {}
    rounding = LayerRounding(model)                   # hooks run in order: the capture sees rounding's output
    model[0].register_forward_hook(lambda m, i, o: first.setdefault("out", o.detach().clone()))
    for member in range(MEMBERS):
        first.clear()
        rounding.member = torch.tensor(member)
        model(x)
        plain = model[0].forward(x).detach()          # forward() alone runs no hooks
        moves = _ulps(first["out"], plain)
        assert not (moves == 9).any()
        assert (moves == 0).all() if member == 0 else (0 < (moves != 0).float().mean() < 1), moves


def test_vmapped_members_round_as_the_same_members_in_turn():
    """The hash of (member, call, entry) gives a vmapped member the moves it has alone:
    the outputs' differences from the unrounded model agree entry by entry."""
    x = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    plain_model, model = _model(torch.float64), _model(torch.float64)
    rounding = LayerRounding(model)
    params = {n: p.detach() for n, p in model.named_parameters()}

    def run(member):
        rounding.member = member
        return functional_call(model, params, (x,))
    rounding.calls = 0
    batched = vmap(run)(torch.arange(MEMBERS))
    plain = plain_model(x).detach()
    for member in range(MEMBERS):
        rounding.calls = 0
        alone = run(torch.tensor(member))
        assert torch.equal(batched[member], alone.detach()), member
        assert torch.equal(alone, plain) == (member == 0)
