"""Ports the harness's tests check, none of them one of the tutorial's examples: an
LSTM classifier, a small CNN (NCHW against NHWC), and a stack of residual blocks whose
layers sit at paths like "blocks.2.norm". Each comes as a torch factory and an NNX
factory, and the NNX factories can plant a porting bug.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from torch import nn

from portcore.recurrent_kinds import LSTM

SEQ, FEATURES, HIDDEN, CLASSES = 6, 5, 8, 3


# ---- an LSTM classifier --------------------------------------------------------------
class TorchLSTMClassifier(nn.Module):
    def __init__(self, rnn=nn.LSTM):
        super().__init__()
        torch.manual_seed(0)                   # the same weights on every call
        self.rnn = rnn(FEATURES, HIDDEN, batch_first=True)
        self.fc = nn.Linear(HIDDEN, CLASSES)

    def forward(self, x):                      # (N, SEQ, FEATURES)
        out, _ = self.rnn(x)                   # (N, SEQ, HIDDEN)
        return self.fc(out[:, -1])


class BiasedLSTMCell(nnx.LSTMCell):
    """nnx.LSTMCell whose input Linears carry a bias, like torch's bias_ih: a stock cell
    has one bias per gate, so torch's two (each trained with its own update) cannot
    both live in it and a training step differs (test_harness.py shows it)."""

    def __init__(self, in_features, hidden_features, *, rngs):
        super().__init__(in_features, hidden_features, rngs=rngs)
        for gate in ("ii", "if_", "ig", "io"):
            setattr(self, gate, nnx.Linear(in_features, hidden_features, use_bias=True, rngs=rngs))


class NnxRecurrentClassifier(nnx.Module):
    """nnx.RNN of `cell` (an LSTM cell by default, or a GRU cell) and a Linear on the last step."""

    def __init__(self, cell=BiasedLSTMCell, seed: int = 0):
        rngs = nnx.Rngs(seed)
        self.rnn = nnx.RNN(cell(FEATURES, HIDDEN, rngs=rngs))
        self.fc = nnx.Linear(HIDDEN, CLASSES, rngs=rngs)

    def __call__(self, x):
        return self.fc(self.rnn(x)[:, -1])


NnxLSTMClassifier = NnxRecurrentClassifier


def lstm_gates_out_of_order(arrays: dict) -> dict:
    """A hand-written conversion that takes torch's gates as i, f, o, g (they are
    i, f, g, o): the g and o rows swapped."""
    out = LSTM(FEATURES, HIDDEN, flax_input_bias=True).to_flax(arrays)
    swapped = {}
    for path, value in out.items():
        gate = {"ig": "io", "io": "ig", "hg": "ho", "ho": "hg"}.get(path[1], path[1])
        swapped[(path[0], gate) + path[2:]] = value
    return swapped


def lstm_data(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, SEQ, FEATURES))
    return x, (x[:, :, 0].sum(1) > 0).astype(np.int64) + (x[:, -1, 1] > 1).astype(np.int64)


# ---- a small CNN: torch NCHW, NNX NHWC -----------------------------------------------
class TorchCNN(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)                   # the same weights on every call
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.head = nn.Linear(4, CLASSES)

    def forward(self, x):                      # (N, 2, 6, 6)
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class NnxCNN(nnx.Module):
    def __init__(self):
        rngs = nnx.Rngs(0)
        self.conv = nnx.Conv(2, 4, (3, 3), padding=1, rngs=rngs)
        self.head = nnx.Linear(4, CLASSES, rngs=rngs)

    def __call__(self, x):                     # (N, 6, 6, 2)
        return self.head(jnp.mean(jax.nn.relu(self.conv(x)), axis=(1, 2)))


def conv_kernel_transposed_with_T(arrays: dict) -> dict:
    """A hand-written conversion: OIHW.T is WHIO, the right shape for a square kernel."""
    return {("kernel",): np.asarray(arrays["weight"]).T, ("bias",): np.asarray(arrays["bias"])}


def cnn_data(n: int = 24, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2, 6, 6))
    return x, (x[:, 0, :3].mean((1, 2)) > x[:, 1, 3:].mean((1, 2))).astype(np.int64) * 2


# ---- residual blocks at "blocks.<i>.<layer>" ------------------------------------------
class TorchBlocks(nn.Module):
    def __init__(self, width=6, depth=3):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList(nn.ModuleDict({"proj": nn.Linear(width, width), "norm": nn.LayerNorm(width)})
                                    for _ in range(depth))
        self.out = nn.Linear(width, 1)

    def forward(self, x):
        for block in self.blocks:
            x = x + torch.tanh(block["norm"](block["proj"](x)))
        return self.out(x)


class NnxBlock(nnx.Module):
    def __init__(self, width, eps, rngs):
        self.proj = nnx.Linear(width, width, rngs=rngs)
        self.norm = nnx.LayerNorm(width, epsilon=eps, rngs=rngs)


class NnxBlocks(nnx.Module):
    def __init__(self, width=6, depth=3, eps_of_block=None):
        """eps_of_block: {i: eps} plants a wrong LayerNorm epsilon in block i."""
        rngs = nnx.Rngs(0)
        self.blocks = nnx.List([NnxBlock(width, (eps_of_block or {}).get(i, 1e-5), rngs) for i in range(depth)])
        self.out = nnx.Linear(width, 1, rngs=rngs)

    def __call__(self, x):
        for block in self.blocks:
            x = x + jnp.tanh(block.norm(block.proj(x)))
        return self.out(x)


def blocks_data(n: int = 32, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6))
    return x, np.cos(x[:, :1]) * x[:, 1:2]


# ---- BatchNorm: Flax's running variance is the biased one -----------------------------
class TorchBatchNormMLP(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 8)
        self.bn = nn.BatchNorm1d(8)
        self.out = nn.Linear(8, 1)

    def forward(self, x):
        return self.out(torch.relu(self.bn(self.fc(x))))


class NnxBatchNormMLP(nnx.Module):
    def __init__(self):
        rngs = nnx.Rngs(0)
        self.fc = nnx.Linear(4, 8, rngs=rngs)
        # torch's momentum 0.1 is Flax's 0.9, and its eps 1e-5 Flax's default too
        self.bn = nnx.BatchNorm(8, momentum=0.9, epsilon=1e-5, rngs=rngs)
        self.out = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.bn(self.fc(x))))


# ---- conv, max-pool, flatten, linear: the flatten order differs ------------------------
class TorchPoolFlattenCNN(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(3 * 3 * 3, CLASSES)

    def forward(self, x):                      # (N, 2, 6, 6) -> (N, 3, 3, 3) -> (N, 27)
        return self.fc(self.flatten(self.pool(torch.relu(self.conv(x)))))


class NnxPoolFlattenCNN(nnx.Module):
    def __init__(self):
        rngs = nnx.Rngs(0)
        self.conv = nnx.Conv(2, 3, (3, 3), padding=1, rngs=rngs)
        self.fc = nnx.Linear(27, CLASSES, rngs=rngs)

    def __call__(self, x):                     # (N, 6, 6, 2) -> (N, 3, 3, 3) NHWC -> (N, 27) in H, W, C order
        h = nnx.max_pool(jax.nn.relu(self.conv(x)), (2, 2), strides=(2, 2))
        return self.fc(h.reshape(h.shape[0], -1))


# ---- a bag of embeddings, a logit -------------------------------------------------------
class TorchBagOfEmbeddings(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 1)

    def forward(self, tokens):                 # (N, 5) integers
        return self.out(self.embed(tokens).mean(dim=1))


class NnxBagOfEmbeddings(nnx.Module):
    def __init__(self):
        rngs = nnx.Rngs(0)
        self.embed = nnx.Embed(10, 4, rngs=rngs)
        self.out = nnx.Linear(4, 1, rngs=rngs)

    def __call__(self, tokens):
        return self.out(self.embed(tokens).mean(axis=1))


def token_data(n: int = 32, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 10, size=(n, 5))
    return tokens, (tokens.sum(1, keepdims=True) > 22).astype(np.float64)


# ---- a GRU classifier: torch's b_hn needs a bias in the cell's hidden Linear -----------
class TorchGRUClassifier(TorchLSTMClassifier):
    def __init__(self):
        super().__init__(rnn=nn.GRU)


class BiasedGRUCell(nnx.GRUCell):
    """nnx.GRUCell computes n = tanh(W_in x + b_in + r * (W_hn h)): with a bias in dense_h,
    torch's b_hn sits inside the reset product as in torch."""

    def __init__(self, in_features, hidden_features, *, rngs):
        super().__init__(in_features, hidden_features, rngs=rngs)
        self.dense_h = nnx.Linear(hidden_features, 3 * hidden_features, use_bias=True, rngs=rngs)


ALL_RUNGS = {2, 3, 4, 5, 6, 7}


def assert_passed(report, rungs=ALL_RUNGS) -> None:
    """A check_port report that passed every rung (of those it ran: `rungs`), each
    comparison inside its tolerance (`used` is |diff| / allowed, measured), with
    nothing located."""
    assert report.passed, report.markdown()
    assert report.first_failure is None and report.located is None
    assert {r.rung for r in report.rows} == set(rungs)
    assert all(r.passed and r.used <= 1.0 for r in report.rows)
    assert "| rung | quantity | max abs | max rel | tolerance | used | ok |" in report.markdown()
