"""Layer kinds public models use beyond the examples' (portcore/conv_kinds.py,
portcore/kinds.py): Conv1d, non-square, strided, dilated and grouped Conv2d, and a
LayerNorm without a bias, each through check_port against a Flax NNX port and its
torch weights converted by the kinds alone (no convert= hook)."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from torch import nn

from parity_tests.harness import PortInputError, check_port
from parity_tests.tests.harness_models import assert_passed
from portcore import convert
from portcore.conv_kinds import Conv1d, Conv2d


class TorchConvs(nn.Module):
    def __init__(self):
        super().__init__()
        self.seq = nn.Conv1d(2, 4, 3, stride=2, padding=1)                       # over (N, 2, 8)
        self.grid = nn.Conv2d(4, 6, (3, 1), stride=(2, 1), padding=(2, 0), dilation=(2, 1), groups=2)
        self.norm = nn.LayerNorm(6, bias=False)
        self.out = nn.Linear(6, 2)

    def forward(self, x):                          # (N, 2, 8)
        h = torch.tanh(self.seq(x))                # (N, 4, 4)
        h = torch.tanh(self.grid(h[..., None]))    # (N, 4, 4, 1) -> (N, 6, 2, 1)
        return self.out(self.norm(h.mean(dim=(2, 3))))


class NnxConvs(nnx.Module):
    def __init__(self, dilation=(2, 1)):
        rngs = nnx.Rngs(0)
        self.seq = nnx.Conv(2, 4, (3,), strides=2, padding=((1, 1),), rngs=rngs)
        self.grid = nnx.Conv(4, 6, (3, 1), strides=(2, 1), padding=((2, 2), (0, 0)), kernel_dilation=dilation,
                             feature_group_count=2, rngs=rngs)
        self.norm = nnx.LayerNorm(6, epsilon=1e-5, use_bias=False, rngs=rngs)
        self.out = nnx.Linear(6, 2, rngs=rngs)

    def __call__(self, x):                         # torch's (N, C, L), channels last inside
        h = jnp.tanh(self.seq(jnp.swapaxes(x, 1, 2)))            # (N, 4, 4) NLC
        h = jnp.tanh(self.grid(h[:, :, None, :]))                 # (N, 4, 1, 4) NHWC -> (N, 2, 1, 6)
        return self.out(self.norm(h.mean(axis=(1, 2))))


def conv_data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2, 8)), rng.normal(size=(n, 2))


def test_the_kinds_read_off_torchs_layers():
    m = TorchConvs()
    assert convert.of_torch(m.seq) == Conv1d(2, 4, 3, 2, 1, True, 1, 1)
    assert convert.of_torch(m.grid) == Conv2d(4, 6, (3, 1), (2, 1), (2, 0), True, (2, 1), 2)
    assert convert.of_torch(m.grid).param_shapes() == {"weight": (6, 2, 3, 1), "bias": (6,)}
    assert convert.of_torch(m.norm).param_shapes() == {"weight": (6,)}
    arrays = {n: p.detach().numpy() for n, p in m.grid.named_parameters()}
    kind = convert.of_torch(m.grid)
    back = kind.from_flax(kind.to_flax(arrays))
    assert all(np.array_equal(back[n], arrays[n]) for n in arrays)          # a round trip is exact


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_port_with_these_layers_passes_without_a_hook(dtype):
    torch.manual_seed(0)
    x, y = conv_data()
    assert_passed(check_port(TorchConvs(), NnxConvs(), x, y, loss="mse", optimizer="adam", steps=3, batch_size=8,
                             dtype=dtype))


def test_a_dilation_left_out_fails_at_rung_2():
    torch.manual_seed(0)
    x, y = conv_data()
    report = check_port(TorchConvs(), NnxConvs(dilation=(1, 1)), x, y, loss="mse", optimizer="adam", steps=3,
                        batch_size=8, dtype="float64")
    assert not report.passed and report.first_failure["rung"] == 2


def test_string_padding_is_refused_in_one_line():
    class Same(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(2, 2, 3, padding="same")

        def forward(self, x):
            return self.conv(x).mean(dim=2)
    x, y = conv_data()
    with pytest.raises(PortInputError, match="only numeric zero padding is supported"):
        check_port(Same(), NnxConvs(), x, y, steps=1, batch_size=8)
