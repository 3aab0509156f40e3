"""Ports built from jaxport.nn pass check_port with no conversion hook and no name map:
the layer kinds convert torch's state_dict straight onto jaxport.nn's attribute paths
(a 2-layer bidirectional LSTM's `weight_hh_l1_reverse` onto `cell_l1_reverse`,
MultiheadAttention's packed in_proj_weight onto q_proj, k_proj, v_proj). A planted
bug in a jaxport.nn layer's use fails at rung 2."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx
from torch import nn

import jaxport.nn as jnn
from parity_tests.harness import check_port
from parity_tests.tests.harness_models import assert_passed

VOCAB, T, D = 11, 6, 4


class TorchSequence(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 5, padding_idx=0)
        self.rnn = nn.LSTM(5, D, num_layers=2, bidirectional=True, batch_first=True)
        self.attn = nn.MultiheadAttention(2 * D, 2, batch_first=True)
        self.norm = nn.LayerNorm(2 * D, bias=False)
        self.gru = nn.GRU(2 * D, 3, bidirectional=True)                    # sequence first
        self.out = nn.Linear(6, 2)

    def forward(self, ids):                                               # (N, T) ids, 0 pads the end
        h, _ = self.rnn(self.embed(ids))                                  # (N, T, 2D)
        a, _ = self.attn(h, h, h, key_padding_mask=ids == 0)
        h, _ = self.gru(F.gelu(self.norm(h + a)).transpose(0, 1))         # (T, N, 6)
        return self.out(h[-1])


class NnxSequence(nnx.Module):
    def __init__(self, mask_padding=True):
        rngs = nnx.Rngs(0)
        self.embed = jnn.Embedding(VOCAB, 5, padding_idx=0, rngs=rngs)
        self.rnn = jnn.LSTM(5, D, num_layers=2, bidirectional=True, batch_first=True, rngs=rngs)
        self.attn = jnn.MultiheadAttention(2 * D, 2, batch_first=True, rngs=rngs)
        self.norm = jnn.LayerNorm(2 * D, bias=False, rngs=rngs)
        self.gru = jnn.GRU(2 * D, 3, bidirectional=True, rngs=rngs)
        self.out = jnn.torch_linear(6, 2, rngs=rngs, dtype=jnp.float32)
        self.mask_padding = mask_padding

    def __call__(self, ids):
        h, _ = self.rnn(self.embed(ids))
        a, _ = self.attn(h, h, h, key_padding_mask=(ids == 0) if self.mask_padding else None)
        h, _ = self.gru(jnp.swapaxes(jnn.gelu(self.norm(h + a)), 0, 1))
        return self.out(h[-1])


def sequence_data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, size=(n, T))
    ids[np.arange(T)[None, :] >= rng.integers(2, T + 1, size=(n, 1))] = 0   # padded tails, never all padding
    return ids, rng.normal(size=(n, 2))


class TorchImage(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(2, 4, 4, stride=2, padding=1)
        self.norm = nn.GroupNorm(2, 4)
        self.conv = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=1, groups=2)
        self.out = nn.Linear(6, 2)

    def forward(self, x):                                                 # (N, 2, 4, 4)
        h = F.max_pool2d(self.conv(F.gelu(self.norm(self.up(x)))), 3, 2, 1)
        return self.out(h.mean(dim=(2, 3)))


class NnxImage(nnx.Module):
    def __init__(self, eps=1e-5):
        rngs = nnx.Rngs(0)
        self.up = jnn.conv_transpose2d(2, 4, 4, stride=2, padding=1, rngs=rngs)
        self.norm = jnn.GroupNorm(2, 4, eps=eps, rngs=rngs)
        self.conv = jnn.conv2d(4, 6, (3, 2), stride=(2, 1), padding=1, groups=2, rngs=rngs)
        self.out = jnn.torch_linear(6, 2, rngs=rngs, dtype=jnp.float32)

    def __call__(self, x):                                                # (N, 4, 4, 2) NHWC
        h = jnn.max_pool2d(self.conv(jnn.gelu(self.norm(self.up(x)))), 3, 2, 1)
        return self.out(h.mean(axis=(1, 2)))


def image_data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2, 4, 4)), rng.normal(size=(n, 2))


@pytest.mark.slow    # ~10-20 s each: the second tier (the locator's sequence-first LSTM stays in the first)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_sequence_model_from_jaxport_nn_passes_without_a_hook(dtype):
    torch.manual_seed(0)
    x, y = sequence_data()
    assert_passed(check_port(TorchSequence(), NnxSequence(), x, y, loss="mse", optimizer="adam", steps=2,
                             batch_size=8, dtype=dtype))


@pytest.mark.parametrize("dtype", [pytest.param("float64", marks=pytest.mark.slow), "float32"])
def test_an_image_model_from_jaxport_nn_passes_without_a_hook(dtype):
    torch.manual_seed(0)
    x, y = image_data()
    assert_passed(check_port(TorchImage(), NnxImage(), x, y, loss="mse", optimizer="adam", steps=2, batch_size=8,
                             dtype=dtype, input_layout="nhwc"))


@pytest.mark.parametrize("torch_model, nnx_model, data, layout", [
    pytest.param(TorchSequence, lambda: NnxSequence(mask_padding=False), sequence_data, None,
                 marks=pytest.mark.slow),
    (TorchImage, lambda: NnxImage(eps=1e-6), image_data, "nhwc")], ids=["padding mask left out",
                                                                        "GroupNorm at Flax's eps"])
def test_a_planted_bug_fails_at_rung_2(torch_model, nnx_model, data, layout):
    torch.manual_seed(0)
    x, y = data()
    report = check_port(torch_model(), nnx_model(), x, y, loss="mse", optimizer="adam", steps=2, batch_size=8,
                        dtype="float64", input_layout=layout)
    assert not report.passed and report.first_failure["rung"] == 2
