"""nn.MultiheadAttention as a Flax NNX module, in torch's layouts and mask semantics.

Twin: torch.nn.MultiheadAttention (portcore/attention_kinds.py converts its packed
in_proj_weight onto q_proj, k_proj, v_proj).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxport.layers import uniform_symmetric


def _additive(mask, dtype, what):
    """torch's mask semantics: a bool mask is True where attention is NOT allowed (-inf
    added), a float mask is added to the scores as it is."""
    if mask is None:
        return None
    mask = jnp.asarray(mask)
    if mask.dtype == jnp.bool_:
        return jnp.where(mask, jnp.asarray(-jnp.inf, dtype), jnp.asarray(0, dtype))
    if not jnp.issubdtype(mask.dtype, jnp.floating):
        raise ValueError(f"jaxport.nn.MultiheadAttention: {what} of dtype {mask.dtype}; pass a bool or float mask")
    return mask.astype(dtype)


class MultiheadAttention(nnx.Module):
    """torch.nn.MultiheadAttention(embed_dim, num_heads, bias=True, batch_first=False):
    `attn(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True)` -> (output, weights or None), as torch.

    What differs from nnx.MultiHeadAttention: torch's layouts ((L, N, E) by default,
    (N, L, E) with batch_first, or unbatched (L, E)); torch's masks (bool True = masked
    out, float = added; attn_mask (L, S) or (N * num_heads, L, S), key_padding_mask
    (N, S)); the output projection over the concatenated heads (out_proj (E, E), not
    nnx's (heads, head_dim, E)); the weights averaged over heads as torch returns them;
    torch's init: xavier_uniform over the packed (3E, E) in-projection, U(+-1/sqrt(E))
    for out_proj's kernel, zero biases. Not supported: dropout > 0, add_bias_kv,
    add_zero_attn, kdim/vdim other than embed_dim. Rows whose keys are all masked are
    NaN, as torch's."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim=None, vdim=None,
                 batch_first: bool = False, *, rngs: nnx.Rngs, dtype=jnp.float32):
        where = "jaxport.nn.MultiheadAttention"
        if dropout:
            raise ValueError(f"{where}: dropout={dropout} is not supported (torch's dropout stream cannot be "
                             "matched); pass dropout=0.0")
        if add_bias_kv or add_zero_attn or kdim not in (None, embed_dim) or vdim not in (None, embed_dim):
            raise ValueError(f"{where}: add_bias_kv, add_zero_attn and kdim/vdim != embed_dim are not supported; "
                             "pass their defaults")
        if embed_dim % num_heads:
            raise ValueError(f"{where}: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.batch_first = embed_dim, num_heads, batch_first
        packed = uniform_symmetric(math.sqrt(6.0 / (4 * embed_dim)))     # xavier over (3E, E)

        def linear(kernel_init):
            return nnx.Linear(embed_dim, embed_dim, use_bias=bias, kernel_init=kernel_init,
                              bias_init=nnx.initializers.zeros, dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.q_proj, self.k_proj, self.v_proj = linear(packed), linear(packed), linear(packed)
        self.out_proj = linear(uniform_symmetric(1.0 / math.sqrt(embed_dim)))

    def __call__(self, query, key, value, key_padding_mask=None, need_weights: bool = True, attn_mask=None,
                 average_attn_weights: bool = True):
        unbatched = query.ndim == 2
        if unbatched:                                   # (L, E) -> (L, 1, E)
            query, key, value = (a[:, None] for a in (query, key, value))
            key_padding_mask = None if key_padding_mask is None else jnp.asarray(key_padding_mask)[None]
        elif self.batch_first:                          # (N, L, E) -> (L, N, E)
            query, key, value = (jnp.swapaxes(a, 0, 1) for a in (query, key, value))
        (tgt, n, e), src, h = query.shape, key.shape[0], self.num_heads

        def heads(a, length):                           # (len, N, E) -> (N, heads, len, head_dim)
            return a.reshape(length, n, h, e // h).transpose(1, 2, 0, 3)
        q, k, v = heads(self.q_proj(query), tgt), heads(self.k_proj(key), src), heads(self.v_proj(value), src)
        scores = (q * math.sqrt(1.0 / (e // h))) @ jnp.swapaxes(k, -1, -2)   # (N, heads, L, S), torch's q scaling
        mask = _additive(attn_mask, scores.dtype, "attn_mask")
        if mask is not None:
            scores = scores + (mask if mask.ndim == 2 else mask.reshape(n, h, tgt, src))
        padding = _additive(key_padding_mask, scores.dtype, "key_padding_mask")
        if padding is not None:
            scores = scores + padding[:, None, None, :]
        weights = jax.nn.softmax(scores, axis=-1)
        out = (weights @ v).transpose(2, 0, 1, 3).reshape(tgt, n, e)          # heads concatenated
        out = self.out_proj(out)
        if not need_weights:
            weights = None
        elif average_attn_weights:
            weights = weights.mean(axis=1)
        if unbatched:
            return out[:, 0], (None if weights is None else weights[0])
        return (jnp.swapaxes(out, 0, 1) if self.batch_first else out), weights
