"""A Transformer encoder classifier with nn.MultiheadAttention, ported to Flax NNX from
jaxport.nn for the port harness (issue 28, "the harness takes public models as people
write them").

Sources: the block is torch's own `nn.TransformerEncoderLayer` (pytorch/pytorch,
`torch/nn/modules/transformer.py`: post-norm, `norm_first=False`; `self_attn` an
`nn.MultiheadAttention(batch_first=True)` called with `need_weights=False`, `linear1`,
`dropout`, `linear2`, `norm1`, `norm2`, `dropout1`, `dropout2`, `x = norm1(x + sa(x))`,
`x = norm2(x + ff(x))`), written through its parts as users copy it; the embedding
scaled by sqrt(d_model) as in the PyTorch examples' `word_language_model/model.py`
(`TransformerModel`); the positions a bare learned `nn.Parameter` of shape
(1, max_len, d_model) added to the tokens, as ViT ports write it
(`self.pos_embedding = nn.Parameter(torch.randn(1, num_patches + 1, dim))`) and
nn.init.normal_(std=0.02) as BERT's; mean pooling over the tokens the attention mask
keeps and a Linear head. The inputs are keywords, `input_ids` and an `attention_mask`
(1 keeps a token, 0 pads it: transformers' convention), turned into the
`key_padding_mask` inside. Dropout 0 (check_port compares dropout off; nn.MultiheadAttention's
own dropout is functional and jaxport.nn's refuses p > 0).

The NNX side is built from jaxport.nn (MultiheadAttention, LayerNorm, Embedding, gelu,
torch_linear) with torch's attribute paths, and `pos_embedding` an nnx.Param: check_port
needs no name_map and no convert.

Planted porting bugs (NnxEncoderClassifier's keywords): `ln_eps=1e-6` (Flax's default, in
every norm1), `residual=False` (norm1 of the attention's output alone),
`mask_padding=False` (the key_padding_mask left out), `gelu_tanh=True` (jax.nn.gelu's
default approximation); and through `convert`, `QK_SWAPPED` (the packed in_proj_weight
split as k, q, v).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
from flax import nnx
from torch import nn

import jaxport.nn as jnn
from portcore.attention_kinds import MultiheadAttention as MhaKind


@dataclass(frozen=True)
class EncoderConfig:
    vocab_size: int = 24
    max_len: int = 8
    d_model: int = 16
    nhead: int = 2
    dim_feedforward: int = 32
    num_layers: int = 2
    num_classes: int = 3


TRAIN = dict(loss="cross_entropy", optimizer="adam", lr=1e-2)


# ---- torch: the encoder as users write it --------------------------------------------
class EncoderLayer(nn.Module):
    """nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=0.0,
    activation="gelu", batch_first=True), written through its parts."""

    def __init__(self, d_model, nhead, dim_feedforward, dropout=0.0):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def _sa_block(self, x, key_padding_mask):
        x = self.self_attn(x, x, x, key_padding_mask=key_padding_mask, need_weights=False)[0]
        return self.dropout1(x)

    def _ff_block(self, x):
        return self.dropout2(self.linear2(self.dropout(F.gelu(self.linear1(x)))))

    def forward(self, src, src_key_padding_mask=None):
        x = self.norm1(src + self._sa_block(src, src_key_padding_mask))
        return self.norm2(x + self._ff_block(x))


class EncoderClassifier(nn.Module):
    def __init__(self, c: EncoderConfig = EncoderConfig(), seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)                 # the same weights on every call
        self.d_model = c.d_model
        self.embedding = nn.Embedding(c.vocab_size, c.d_model)
        self.pos_embedding = nn.Parameter(torch.zeros(1, c.max_len, c.d_model))
        nn.init.normal_(self.pos_embedding, std=0.02)
        self.layers = nn.ModuleList([EncoderLayer(c.d_model, c.nhead, c.dim_feedforward)
                                     for _ in range(c.num_layers)])
        self.classifier = nn.Linear(c.d_model, c.num_classes)

    def forward(self, input_ids, attention_mask):
        x = self.embedding(input_ids) * math.sqrt(self.d_model) + self.pos_embedding[:, :input_ids.size(1)]
        padding = attention_mask == 0
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=padding)
        keep = attention_mask.unsqueeze(-1).to(x.dtype)
        return self.classifier((x * keep).sum(1) / keep.sum(1))


# ---- NNX: the port --------------------------------------------------------------------
@dataclass(frozen=True)
class Bugs:
    ln_eps: float = 1e-5
    residual: bool = True
    mask_padding: bool = True
    gelu_tanh: bool = False
    pos_offset: int = 0


class NnxEncoderLayer(nnx.Module):
    def __init__(self, c, bugs, rngs):
        d = c.d_model
        self.self_attn = jnn.MultiheadAttention(d, c.nhead, batch_first=True, rngs=rngs)
        self.linear1 = jnn.torch_linear(d, c.dim_feedforward, rngs=rngs, dtype=jnp.float32)
        self.linear2 = jnn.torch_linear(c.dim_feedforward, d, rngs=rngs, dtype=jnp.float32)
        self.norm1 = jnn.LayerNorm(d, eps=bugs.ln_eps, rngs=rngs)
        self.norm2 = jnn.LayerNorm(d, rngs=rngs)
        self.bugs = bugs

    def __call__(self, src, src_key_padding_mask=None):
        mask = src_key_padding_mask if self.bugs.mask_padding else None
        sa = self.self_attn(src, src, src, key_padding_mask=mask, need_weights=False)[0]
        x = self.norm1(src + sa if self.bugs.residual else sa)
        ff = self.linear2(jnn.gelu(self.linear1(x), approximate="tanh" if self.bugs.gelu_tanh else "none"))
        return self.norm2(x + ff)


class NnxEncoderClassifier(nnx.Module):
    def __init__(self, c: EncoderConfig = EncoderConfig(), seed: int = 0, **bugs):
        rngs, b = nnx.Rngs(seed), Bugs(**bugs)
        self.d_model, self.pos_offset = c.d_model, b.pos_offset
        self.embedding = jnn.Embedding(c.vocab_size, c.d_model, rngs=rngs)
        self.pos_embedding = nnx.Param(0.02 * nnx.initializers.normal(1.0)(rngs.params(), (1, c.max_len, c.d_model)))
        self.layers = nnx.List([NnxEncoderLayer(c, b, rngs) for _ in range(c.num_layers)])
        self.classifier = jnn.torch_linear(c.d_model, c.num_classes, rngs=rngs, dtype=jnp.float32)

    def __call__(self, input_ids, attention_mask):
        t, o = input_ids.shape[1], self.pos_offset
        x = self.embedding(input_ids) * math.sqrt(self.d_model) + self.pos_embedding[:, o:o + t]
        padding = attention_mask == 0
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=padding)
        keep = attention_mask[..., None].astype(x.dtype)
        return self.classifier((x * keep).sum(1) / keep.sum(1))


def qk_swapped(c: EncoderConfig = EncoderConfig(), layer: int = 0) -> dict:
    """check_port's `convert` with a planted bug: layer's packed in_proj_weight (and bias)
    split as k, q, v where torch packs q, k, v."""
    kind = MhaKind(c.d_model, c.nhead)

    def split(arrays):
        out = kind.to_flax(arrays)
        swap = {"q_proj": "k_proj", "k_proj": "q_proj"}
        return {(swap.get(p[0], p[0]),) + p[1:]: v for p, v in out.items()}
    return {f"layers.{layer}.self_attn": split}


def token_data(n: int = 16, c: EncoderConfig = EncoderConfig(), seed: int = 0):
    """{"input_ids": (n, max_len) int64, "attention_mask": (n, max_len) int64, 1 = keep,
    at least 2 tokens kept per row, padded tails}, and labels (n,) int64: the class of the
    sum of the kept ids mod num_classes."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, c.vocab_size, size=(n, c.max_len))
    mask = (np.arange(c.max_len)[None, :] < rng.integers(2, c.max_len + 1, size=(n, 1))).astype(np.int64)
    ids = ids * mask
    return {"input_ids": ids, "attention_mask": mask}, (ids.sum(1) % c.num_classes).astype(np.int64)
