"""The reference's own noise: an ensemble of equally correct torch runs.

Two correct implementations of a training run differ by rounding at every step, not
only in their initial weights. The ensemble models that: M copies of the torch model,
each of whose parameters is moved by one ulp, in a random direction, after every
optimizer update (member 0 is not moved at all: it differs from the reference only by
running batched). How far the members drift from torch's own run, step by step, is the
yardstick of rungs 6 and 7 (parity_tests/engine/bounds/criterion.py).

The members run as ONE torch computation: the parameters are stacked along a leading
member axis, the forward pass is `torch.func.vmap` of the model over that axis, the
objective is the sum of the members' losses (its gradient with respect to member i's
parameters is exactly member i's gradient), and torch.optim's own optimizer updates
the stacked tensors elementwise, i.e. exactly as it updates each member alone. 16
members cost about twice one run.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, vmap

import torchref
import torchref.convert as tc
import torchref.optim as torch_optim
import torchref.training as tt
from torchref.data import ArrayDataset

MEMBERS = 16


@dataclass
class Ensemble:
    step_losses: np.ndarray      # (M, steps) float64
    params: list                 # M dicts of fitted parameters (exchange names)


def _ulp_step(p: torch.Tensor, generator: torch.Generator, keep_first: bool) -> None:
    """Move every entry one ulp up or down at random, in place (row 0 kept if asked).
    nextafter towards p + 1 or p - 1 (p + 0 for row 0: no move); parameters here are
    far below 2**24, where p +- 1 would round back to p."""
    sign = torch.randint(0, 2, p.shape, generator=generator, dtype=p.dtype).mul_(2).sub_(1)
    if keep_first:
        sign[0] = 0
    p.copy_(torch.nextafter(p, p + sign))


def run(example: str, params: dict, x: np.ndarray, y: np.ndarray, order: np.ndarray, config, *,
        dtype: str, device: str = "cpu", members: int = MEMBERS, seed: int = 0,
        form: str = "class") -> Ensemble:
    """`members` torch runs from `params` over the batches of `order`, each moved by one
    ulp per parameter after every update (all but member 0)."""
    model = tt.build_model(example, params, dtype=dtype, device=device, form=form)
    names = dict(zip((id(p) for p in tc.named_parameters(model, example, form).values()),
                     tc.named_parameters(model, example, form)))
    paths = {path: names[id(p)] for path, p in model.named_parameters()}
    stacked = {path: torch.nn.Parameter(p.detach().unsqueeze(0).repeat(members, *[1] * p.dim()))
               for path, p in model.named_parameters()}
    optimizer = torch_optim.make_optimizer(config, list(stacked.values()))
    loss_fn = torchref.example_module(example).loss_fn
    generator = torch.Generator().manual_seed(seed)
    data = ArrayDataset(x, y, dtype=dtype, device=device)

    def losses(ps, xb, yb):                      # one member's loss
        return loss_fn(functional_call(model, ps, (xb,)), yb)
    batched = vmap(losses, in_dims=(0, None, None))
    out = []
    for row in np.asarray(order):
        for start in range(0, len(row), config.batch_size):
            xb, yb = data[row[start:start + config.batch_size]]
            member_losses = batched(stacked, xb, yb)                  # (M,)
            optimizer.zero_grad()
            member_losses.sum().backward()
            optimizer.step()
            with torch.no_grad():
                for p in stacked.values():
                    _ulp_step(p, generator, keep_first=True)
            out.append(member_losses.detach())
    step_losses = (torch.stack(out, dim=1) if out else torch.zeros(members, 0)).cpu().numpy()
    fitted = [{paths[path]: p[i].detach().cpu().numpy().copy() for path, p in stacked.items()}
              for i in range(members)]
    return Ensemble(step_losses.astype(np.float64), fitted)
