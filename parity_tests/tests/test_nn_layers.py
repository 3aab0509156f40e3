"""jaxport.nn's torch-semantics layers against torch's own: forward outputs and the
gradients with respect to inputs and parameters, torch's weights copied through the
layer kinds (nn_pairs.compare: float64 to 1e-10 relative, float32 to torch.testing's
defaults). Convolutions, norms and pooling are in test_nn_layers_grid.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn

import jaxport.nn as jnn
from parity_tests.tests.nn_pairs import Pair, compare

DTYPES = ["float64", "float32"]
L, S, N, E, HEADS = 5, 4, 3, 8, 2


def _seq(shape):
    return lambda rng: [rng.standard_normal(shape)]


def _with_state(shape, states):
    return lambda rng: [rng.standard_normal(shape)] + [rng.standard_normal(s) for s in states]


RECURRENT = {
    "lstm 2 layers bidirectional, (h0, c0)": Pair(
        lambda: nn.LSTM(3, 4, num_layers=2, bidirectional=True),
        lambda r, d: jnn.LSTM(3, 4, num_layers=2, bidirectional=True, rngs=r, dtype=d),
        _with_state((L, N, 3), [(4, N, 4), (4, N, 4)]),
        lambda m, x, h, c: (lambda o: (o[0], *o[1]))(m(x, (h, c))),
        lambda m, x, h, c: (lambda o: (o[0], *o[1]))(m(x, (h, c)))),
    "lstm 1 layer batch_first": Pair(
        lambda: nn.LSTM(3, 4, batch_first=True),
        lambda r, d: jnn.LSTM(3, 4, batch_first=True, rngs=r, dtype=d), _seq((N, L, 3))),
    "lstm 2 layers unbatched": Pair(
        lambda: nn.LSTM(3, 2, num_layers=2),
        lambda r, d: jnn.LSTM(3, 2, num_layers=2, rngs=r, dtype=d), _seq((L, 3))),
    "gru 2 layers bidirectional batch_first, h0": Pair(
        lambda: nn.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True),
        lambda r, d: jnn.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True, rngs=r, dtype=d),
        _with_state((N, L, 3), [(4, N, 4)])),
    "gru 1 layer bidirectional": Pair(
        lambda: nn.GRU(3, 4, bidirectional=True),
        lambda r, d: jnn.GRU(3, 4, bidirectional=True, rngs=r, dtype=d), _seq((L, N, 3))),
}


def _mha(batch_first=False, bias=True, **call):
    return (lambda: nn.MultiheadAttention(E, HEADS, bias=bias, batch_first=batch_first),
            lambda r, d: jnn.MultiheadAttention(E, HEADS, bias=bias, batch_first=batch_first, rngs=r, dtype=d))


def _masks(rng):
    padding = np.zeros((N, S), bool)
    padding[0, -1], padding[2, -2:] = True, True                 # with the causal mask: no row loses all its keys
    causal = np.triu(np.ones((L, S), bool), k=2)
    return padding, causal


ATTENTION = {
    "self-attention, averaged weights": Pair(
        *_mha(), lambda rng: [rng.standard_normal((L, N, E))],
        lambda m, x: m(x, x, x), lambda m, x: m(x, x, x)),
    "cross-attention, bool attn_mask and key_padding_mask": Pair(
        *_mha(), lambda rng: [rng.standard_normal((L, N, E)), rng.standard_normal((S, N, E)),
                              rng.standard_normal((S, N, E)), *_masks(rng)],
        lambda m, q, k, v, p, a: m(q, k, v, key_padding_mask=p, attn_mask=a),
        lambda m, q, k, v, p, a: m(q, k, v, key_padding_mask=p, attn_mask=a)),
    "batch_first, float (N*heads, L, S) mask, per-head weights": Pair(
        *_mha(batch_first=True), lambda rng: [rng.standard_normal((N, L, E)), rng.standard_normal((N, S, E)),
                                              rng.standard_normal((N * HEADS, L, S))],
        lambda m, q, kv, a: m(q, kv, kv, attn_mask=a, average_attn_weights=False),
        lambda m, q, kv, a: m(q, kv, kv, attn_mask=a, average_attn_weights=False)),
    "no bias, need_weights=False, float key_padding_mask": Pair(
        *_mha(bias=False), lambda rng: [rng.standard_normal((L, N, E)), rng.standard_normal((N, L)) * 2],
        lambda m, x, p: m(x, x, x, key_padding_mask=p, need_weights=False),
        lambda m, x, p: m(x, x, x, key_padding_mask=p, need_weights=False)),
    "unbatched": Pair(
        *_mha(), lambda rng: [rng.standard_normal((L, E)), rng.standard_normal((S, E))],
        lambda m, q, kv: m(q, kv, kv), lambda m, q, kv: m(q, kv, kv)),
}


# the two-layer stacks in float32 run in the second tier (make test's time)
@pytest.mark.parametrize("name, dtype", [
    pytest.param(n, d, marks=pytest.mark.slow if d == "float32" and "2 layers" in n else ())
    for n in RECURRENT for d in DTYPES])
def test_recurrent_layers_match_torch(name, dtype):
    compare(RECURRENT[name], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ATTENTION)
def test_multihead_attention_matches_torch(name, dtype):
    compare(ATTENTION[name], dtype)


def test_the_reverse_direction_is_checked():
    """A reverse pass whose outputs are left in reversed order fails the comparison."""
    pair = RECURRENT["gru 1 layer bidirectional"]
    wrong = Pair(pair.torch, pair.nnx, pair.inputs,
                 run_nnx=lambda m, x: (lambda o: (jnp.concatenate([o[0][:, :, :4], o[0][::-1, :, 4:]], -1), o[1]))(m(x)))
    with pytest.raises(AssertionError, match="output 0"):
        compare(wrong, "float64")


@pytest.mark.parametrize("make, match", [
    (lambda: jnn.LSTM(3, 4, dropout=0.1, rngs=None), "dropout=0.1"),
    (lambda: jnn.GRU(3, 4, bias=False, rngs=None), "bias=False"),
    (lambda: jnn.MultiheadAttention(8, 2, dropout=0.1, rngs=None), "pass dropout=0.0"),
    (lambda: jnn.MultiheadAttention(8, 3, rngs=None), "not divisible"),
])
def test_unsupported_options_raise_one_clear_line(make, match):
    with pytest.raises(ValueError, match=match) as info:
        make()
    assert "jaxport.nn." in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("make", [
    lambda r: jnn.torch_linear(3, 4, rngs=r), lambda r: jnn.torch_conv(3, 4, 3, 1, rngs=r),
    lambda r: jnn.conv2d(3, 4, 3, rngs=r), lambda r: jnn.TorchBatchNorm(4, rngs=r),
    lambda r: jnn.LayerNorm(4, rngs=r), lambda r: jnn.TorchLSTMCell(3, 4, rngs=r),
    lambda r: jnn.TorchGRUCell(3, 4, rngs=r), lambda r: jnn.LSTM(3, 4, rngs=r),
    lambda r: jnn.MultiheadAttention(8, 2, rngs=r),
], ids=["torch_linear", "torch_conv", "conv2d", "TorchBatchNorm", "LayerNorm", "TorchLSTMCell", "TorchGRUCell",
        "LSTM", "MultiheadAttention"])
def test_layers_default_to_float32_as_torchs_do(make):
    """Built as torch's are, from sizes alone: float32 unless a dtype is given (a held-out
    MobileNetV2 port found TorchBatchNorm demanding one where conv2d did not)."""
    from flax import nnx
    params = jax.tree.leaves(nnx.state(make(nnx.Rngs(0)), nnx.Param))
    assert params and all(p.dtype == jnp.float32 for p in params)
