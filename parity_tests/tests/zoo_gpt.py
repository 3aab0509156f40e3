"""A nanoGPT-style GPT, ported to Flax NNX for the port harness (issue 21, "a zoo of
public models").

Source: karpathy/nanoGPT, `model.py` (LayerNorm with an optional bias and eps 1e-5,
CausalSelfAttention with one c_attn for q, k, v and scale 1/sqrt(head dim), MLP with
c_fc, exact GELU and c_proj, pre-norm Blocks, wte + wpe embeddings, ln_f, lm_head, the
0.02 normal init with the residual projections' 0.02/sqrt(2 n_layer)). Written from that
definition, with three changes for the harness: `forward(idx)` returns the logits of
every position as (N, V, T), torch's cross_entropy layout (nanoGPT returns (logits,
loss) and, without targets, only the last position); attention is
`F.scaled_dot_product_attention(is_causal=True)`, nanoGPT's path on torch >= 2; and the
weight tying `wte.weight = lm_head.weight` is a constructor switch (`tie`), off by default.

The torch LayerNorm is nanoGPT's own class, which the converter does not know by its
attributes: give check_port `convert=ln_kinds(config)` (portcore's LayerNorm kind per norm).

Planted porting bugs (NnxGPT's keywords): `ln_eps=1e-6` (Flax's default),
`mask_offset=1` (each position also sees the next), `scale_by="embd"` (1/sqrt(C) for
1/sqrt(head dim)), `gelu_tanh=True` (jax.nn.gelu's default approximation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
from flax import nnx
from torch import nn

from portcore import kinds


@dataclass(frozen=True)
class GPTConfig:
    block_size: int = 16
    vocab_size: int = 64
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 32
    dropout: float = 0.0
    bias: bool = True


TRAIN = dict(loss="cross_entropy", optimizer="adamw", lr=1e-2)


# ---- torch: nanoGPT's modules --------------------------------------------------------
class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (nanoGPT's)."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_attn = nn.Linear(c.n_embd, 3 * c.n_embd, bias=c.bias)
        self.c_proj = nn.Linear(c.n_embd, c.n_embd, bias=c.bias)
        self.n_head, self.n_embd = c.n_head, c.n_embd

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_fc = nn.Linear(c.n_embd, 4 * c.n_embd, bias=c.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * c.n_embd, c.n_embd, bias=c.bias)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln_1, self.attn = LayerNorm(c.n_embd, c.bias), CausalSelfAttention(c)
        self.ln_2, self.mlp = LayerNorm(c.n_embd, c.bias), MLP(c)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, c: GPTConfig = GPTConfig(), tie: bool = False, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)                # the same weights on every call
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(c.vocab_size, c.n_embd), wpe=nn.Embedding(c.block_size, c.n_embd),
            h=nn.ModuleList([Block(c) for _ in range(c.n_layer)]), ln_f=LayerNorm(c.n_embd, c.bias)))
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if tie:
            self.transformer.wte.weight = self.lm_head.weight
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))

    def forward(self, idx):
        t = idx.size(1)
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x)).transpose(1, 2)       # (N, V, T)


def ln_kinds(c: GPTConfig = GPTConfig()) -> dict:
    """check_port's `convert` for nanoGPT's own LayerNorm class: portcore's LayerNorm kind
    (bias=False: a hook, weight -> scale). Without it check_port raises AttributeError:
    the converter takes any class named LayerNorm for torch's and reads normalized_shape."""
    paths = [f"transformer.h.{i}.{n}" for i in range(c.n_layer) for n in ("ln_1", "ln_2")] + ["transformer.ln_f"]
    if c.bias:
        return {p: kinds.LayerNorm(c.n_embd, 1e-5) for p in paths}
    return {p: lambda a: {"scale": a["weight"]} for p in paths}     # the kind needs a bias: a hook


# ---- NNX: the port ---------------------------------------------------------------------
@dataclass(frozen=True)
class Bugs:
    ln_eps: float = 1e-5
    mask_offset: int = 0
    scale_by: str = "head"
    gelu_tanh: bool = False


class NnxAttention(nnx.Module):
    def __init__(self, c, bugs, rngs):
        self.c_attn = nnx.Linear(c.n_embd, 3 * c.n_embd, use_bias=c.bias, rngs=rngs)
        self.c_proj = nnx.Linear(c.n_embd, c.n_embd, use_bias=c.bias, rngs=rngs)
        self.n_head, self.bugs = c.n_head, bugs

    def __call__(self, x):
        B, T, C = x.shape
        q, k, v = (t.reshape(B, T, self.n_head, C // self.n_head).transpose(0, 2, 1, 3)
                   for t in jnp.split(self.c_attn(x), 3, axis=2))
        att = (q @ k.swapaxes(-2, -1)) * (1.0 / math.sqrt(C if self.bugs.scale_by == "embd" else k.shape[-1]))
        att = jnp.where(jnp.tril(jnp.ones((T, T), bool), k=self.bugs.mask_offset), att, -jnp.inf)
        y = jax.nn.softmax(att, axis=-1) @ v                                 # (B, nh, T, hs)
        return self.c_proj(y.transpose(0, 2, 1, 3).reshape(B, T, C))


class NnxMLP(nnx.Module):
    def __init__(self, c, bugs, rngs):
        self.c_fc = nnx.Linear(c.n_embd, 4 * c.n_embd, use_bias=c.bias, rngs=rngs)
        self.c_proj = nnx.Linear(4 * c.n_embd, c.n_embd, use_bias=c.bias, rngs=rngs)
        self.approximate = bugs.gelu_tanh

    def __call__(self, x):
        return self.c_proj(jax.nn.gelu(self.c_fc(x), approximate=self.approximate))


class NnxBlock(nnx.Module):
    def __init__(self, c, bugs, rngs):
        self.ln_1 = nnx.LayerNorm(c.n_embd, epsilon=bugs.ln_eps, use_bias=c.bias, rngs=rngs)
        self.attn = NnxAttention(c, bugs, rngs)
        self.ln_2 = nnx.LayerNorm(c.n_embd, epsilon=bugs.ln_eps, use_bias=c.bias, rngs=rngs)
        self.mlp = NnxMLP(c, bugs, rngs)

    def __call__(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NnxTransformer(nnx.Module):
    def __init__(self, c, bugs, rngs):
        self.wte = nnx.Embed(c.vocab_size, c.n_embd, rngs=rngs)
        self.wpe = nnx.Embed(c.block_size, c.n_embd, rngs=rngs)
        self.h = nnx.List([NnxBlock(c, bugs, rngs) for _ in range(c.n_layer)])
        self.ln_f = nnx.LayerNorm(c.n_embd, epsilon=bugs.ln_eps, use_bias=c.bias, rngs=rngs)


class NnxGPT(nnx.Module):
    """tie=True: no lm_head; the logits are wte.attend(x), x @ wte's embedding^T."""

    def __init__(self, c: GPTConfig = GPTConfig(), tie: bool = False, seed: int = 0, **bugs):
        rngs = nnx.Rngs(seed)
        self.transformer = NnxTransformer(c, Bugs(**bugs), rngs)
        self.lm_head = None if tie else nnx.Linear(c.n_embd, c.vocab_size, use_bias=False, rngs=rngs)

    def __call__(self, idx):
        tr = self.transformer
        x = tr.wte(idx) + tr.wpe(jnp.arange(idx.shape[1]))
        for block in tr.h:
            x = block(x)
        x = tr.ln_f(x)
        logits = tr.wte.attend(x) if self.lm_head is None else self.lm_head(x)
        return logits.transpose(0, 2, 1)                                    # (N, V, T)


def token_data(n: int = 8, c: GPTConfig = GPTConfig(), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random token sequences: inputs (n, T) and next-token targets (n, T), int64."""
    seq = np.random.default_rng(seed).integers(0, c.vocab_size, size=(n, c.block_size + 1))
    return seq[:, :-1].astype(np.int64), seq[:, 1:].astype(np.int64)
