"""jaxport.nn's convolutions, norms, embedding, gelu, leaky_relu and max pooling against torch's:
forward outputs and gradients with respect to inputs and parameters, torch's weights
copied through the layer kinds (nn_pairs.compare: float64 to 1e-10 relative, float32
to torch.testing's defaults). Channels-first torch inputs are transposed to channels
last for the NNX side, and its outputs back."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from torch import nn

import jaxport.nn as jnn
from parity_tests.tests.nn_pairs import Pair, compare

DTYPES = ["float64", "float32"]


def _last(x):                  # torch's (N, C, ...) -> channels last
    return jnp.moveaxis(x, 1, -1)


def _first(y):
    return jnp.moveaxis(y, -1, 1)


def _channels_last(m, x):
    return _first(m(_last(x)))


def _normal(*shape, scale=1.0):
    return lambda rng: [rng.standard_normal(shape) * scale]


GRID = {
    "conv1d strided dilated grouped": Pair(
        lambda: nn.Conv1d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2),
        lambda r, d: jnn.conv1d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2, rngs=r, dtype=d),
        _normal(2, 4, 9), run_nnx=_channels_last),
    "conv2d non-square kernel, stride, dilation, groups, no bias": Pair(
        lambda: nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2, bias=False),
        lambda r, d: jnn.conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2, bias=False,
                                rngs=r, dtype=d),
        _normal(2, 4, 7, 6), run_nnx=_channels_last),
    "conv_transpose2d upsampling 4/2/1": Pair(
        lambda: nn.ConvTranspose2d(3, 2, 4, stride=2, padding=1),
        lambda r, d: jnn.conv_transpose2d(3, 2, 4, stride=2, padding=1, rngs=r, dtype=d),
        _normal(2, 3, 4, 5), run_nnx=_channels_last),
    "conv_transpose2d non-square, output_padding, dilation": Pair(
        lambda: nn.ConvTranspose2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 0), output_padding=(1, 0),
                                   dilation=(1, 2)),
        lambda r, d: jnn.conv_transpose2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 0), output_padding=(1, 0),
                                          dilation=(1, 2), rngs=r, dtype=d),
        _normal(2, 2, 3, 4), run_nnx=_channels_last),
    "layer_norm": Pair(lambda: nn.LayerNorm(6), lambda r, d: jnn.LayerNorm(6, rngs=r, dtype=d),
                       _normal(3, 4, 6, scale=3.0)),
    "layer_norm without bias": Pair(lambda: nn.LayerNorm(6, bias=False),
                                    lambda r, d: jnn.LayerNorm(6, bias=False, rngs=r, dtype=d), _normal(3, 6)),
    "layer_norm without affine": Pair(lambda: nn.LayerNorm(6, elementwise_affine=False),
                                      lambda r, d: jnn.LayerNorm(6, elementwise_affine=False, rngs=r, dtype=d),
                                      _normal(3, 6)),
    "group_norm NCHW vs NHWC": Pair(lambda: nn.GroupNorm(3, 6), lambda r, d: jnn.GroupNorm(3, 6, rngs=r, dtype=d),
                                    _normal(2, 6, 3, 4, scale=2.0), run_nnx=_channels_last),
    "embedding with padding_idx": Pair(
        lambda: nn.Embedding(7, 4, padding_idx=-2), lambda r, d: jnn.Embedding(7, 4, padding_idx=-2, rngs=r, dtype=d),
        lambda rng: [np.array([[5, 1, 5, 0], [2, 5, 6, 1]])]),
    "gelu exact": Pair(lambda: nn.GELU(), lambda r, d: jnn.gelu, _normal(3, 5, scale=3.0)),
    "gelu tanh": Pair(lambda: nn.GELU(approximate="tanh"), lambda r, d: lambda x: jnn.gelu(x, "tanh"),
                      _normal(3, 5, scale=3.0)),
    "leaky_relu 0.2, exact zeros among the inputs": Pair(
        lambda: nn.LeakyReLU(0.2), lambda r, d: lambda x: jnn.leaky_relu(x, 0.2),
        lambda rng: [np.where(rng.random((3, 6)) < 0.3, 0.0, rng.standard_normal((3, 6)))]),
    "max_pool2d 3/2/1 on negative values": Pair(
        lambda: nn.MaxPool2d(3, 2, 1), lambda r, d: lambda x: jnn.max_pool2d(x, 3, 2, 1),
        lambda rng: [-np.abs(rng.standard_normal((2, 3, 7, 6))) - 1.0], run_nnx=_channels_last),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", GRID)
def test_layers_match_torch(name, dtype):
    compare(GRID[name], dtype)


def test_padding_idx_row_is_used_and_not_trained():
    """A nonzero padding row (a loaded model's) is looked up as it is; its gradient is zero."""
    pair = GRID["embedding with padding_idx"]

    def nonzero_row():
        layer = nn.Embedding(7, 4, padding_idx=-2)
        with torch.no_grad():
            layer.weight[5] = 3.0
        return layer
    compare(Pair(nonzero_row, pair.nnx, pair.inputs), "float64")
    table = jnn.Embedding(7, 4, padding_idx=5, rngs=nnx.Rngs(0))
    assert not np.asarray(table.embedding[...])[5].any() and np.asarray(table.embedding[...])[4].any()


POOLS = [(2, None, 0), (3, 1, 1), (3, 2, 1), ((2, 3), (2, 1), (1, 0))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, stride, padding", POOLS)
def test_max_pool2d_routes_tied_maxima_as_torch(kernel, stride, padding, dtype):
    """Constant regions (values 0-2, most windows tie; overlapping windows share entries):
    the gradient of every entry equals torch's, and the maxima too, bit for bit."""
    rng = np.random.default_rng(1)
    with jax.enable_x64(dtype == "float64"):
        for _ in range(5):
            x = rng.integers(0, 3, size=(2, 3, 8, 7)).astype(dtype)            # NCHW
            x[:, :, 2:6, 1:5] = 1.0                                               # one flat plateau
            t = torch.tensor(x, requires_grad=True)
            out = torch.nn.functional.max_pool2d(t, kernel, stride, padding)
            g = rng.integers(1, 5, size=tuple(out.shape)).astype(dtype)         # small integers: exact sums
            out.backward(torch.tensor(g))
            pooled, vjp = jax.vjp(lambda v: jnn.max_pool2d(v, kernel, stride, padding), jnp.asarray(x.transpose(0, 2, 3, 1)))
            grad = np.asarray(vjp(jnp.asarray(g.transpose(0, 2, 3, 1)))[0]).transpose(0, 3, 1, 2)
            assert np.array_equal(np.asarray(pooled).transpose(0, 3, 1, 2), out.detach().numpy())
            assert np.array_equal(grad, t.grad.numpy())


@pytest.mark.parametrize("call, match", [
    (lambda: jnn.max_pool2d(jnp.zeros((1, 4, 4, 1)), 2, padding=2), "more than half"),
    (lambda: jnn.max_pool2d(jnp.zeros((1, 4, 4)), 2), r"\(N, H, W, C\)"),
    (lambda: jnn.conv2d(3, 4, 3, padding="same", rngs=None), "give the numbers"),
    (lambda: jnn.conv_transpose2d(4, 4, 3, groups=2, rngs=None), "no feature groups"),
    (lambda: jnn.conv_transpose2d(4, 4, 3, stride=2, output_padding=2, rngs=None), "output_padding"),
    (lambda: jnn.LayerNorm((4, 5), rngs=None), "only the last axis"),
    (lambda: jnn.GroupNorm(4, 6, rngs=None), "not divisible"),
    (lambda: jnn.Embedding(5, 2, max_norm=1.0, rngs=None), "max_norm"),
    (lambda: jnn.gelu(jnp.zeros(2), "erf"), "approximate"),
])
def test_bad_arguments_raise_one_clear_line(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "jaxport.nn." in str(info.value) and "\n" not in str(info.value)
