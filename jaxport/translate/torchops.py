"""torch's tensor functions with torch's semantics, in JAX: what the generated ports
call where no single jnp function has torch's meaning (split by chunk size, view with
its -1, layer_norm's two-pass variance, scaled_dot_product_attention's default scale
and causal mask). Imports jax only, like the rest of jaxport: a generated port runs
without torch installed.

Channels: the generated code runs convolutions, pools and BatchNorm channels last and
moves a map back to torch's channels-first layout wherever the order of its entries
matters (a flatten, a view, a Linear over the last axis); `channels_last` and
`channels_first` are those two moves.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxport.layers import uniform_symmetric


def channels_last(x):
    """torch's (N, C, ...) -> (N, ..., C); a 2-D (N, C) is already both."""
    return x if x.ndim < 3 else jnp.moveaxis(x, 1, -1)


def channels_first(x):
    """(N, ..., C) -> torch's (N, C, ...)."""
    return x if x.ndim < 3 else jnp.moveaxis(x, -1, 1)


def linear(in_features: int, out_features: int, bias: bool = True, *, rngs: nnx.Rngs, dtype=jnp.float32):
    """nnx.Linear like torch.nn.Linear(in, out, bias): U(+-1/sqrt(in)) kernel and bias
    (jaxport.nn.torch_linear, with torch's bias switch)."""
    init = uniform_symmetric(1.0 / math.sqrt(in_features))
    return nnx.Linear(in_features, out_features, use_bias=bias, kernel_init=init, bias_init=init,
                      dtype=dtype, param_dtype=dtype, rngs=rngs)


def _shape(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)


def view(x, *shape):
    """x.view(*shape) / x.reshape(*shape): row-major, one -1 inferred (as jnp)."""
    return jnp.reshape(x, _shape(shape))


def flatten(x, start_dim: int = 0, end_dim: int = -1):
    """torch.flatten(x, start_dim, end_dim) in torch's (row-major) order."""
    if x.ndim == 0:
        return x.reshape(1)
    s, e = start_dim % x.ndim, end_dim % x.ndim
    return x.reshape(x.shape[:s] + (-1,) + x.shape[e + 1:])


def split(x, split_size_or_sections, axis: int = 0):
    """torch.split: an int is each piece's size (the last may be smaller), a list the sizes."""
    n = x.shape[axis]
    if isinstance(split_size_or_sections, int):
        edges = list(range(split_size_or_sections, n, split_size_or_sections))
    else:
        edges = [sum(split_size_or_sections[:i + 1]) for i in range(len(split_size_or_sections) - 1)]
    return tuple(jnp.split(x, edges, axis=axis))


def chunk(x, chunks: int, axis: int = 0):
    """torch.chunk: pieces of ceil(n / chunks)."""
    return split(x, -(-x.shape[axis] // chunks), axis)


def size(x, dim=None):
    """x.size() -> the shape; x.size(d) -> one entry."""
    return tuple(x.shape) if dim is None else x.shape[dim]


def squeeze(x, axis=None):
    """torch's squeeze: a dim that is not 1 is left alone (jnp.squeeze raises)."""
    if axis is None:
        return jnp.squeeze(x)
    return jnp.squeeze(x, axis) if x.shape[axis] == 1 else x


def mean(x, axis=None, keepdims: bool = False):
    return jnp.mean(x, axis=axis, keepdims=keepdims)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps: float = 1e-5):
    """F.layer_norm over the trailing len(normalized_shape) axes, with torch's two-pass
    variance mean((x - mean)^2) (the E[x^2] - E[x]^2 form cancels in float32)."""
    axes = tuple(range(x.ndim - len(tuple(normalized_shape)), x.ndim))
    mu = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mu), axis=axes, keepdims=True)
    y = (x - mu) * jax.lax.rsqrt(var + eps)
    if weight is not None:
        y = y * weight
    return y if bias is None else y + bias


def scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p: float = 0.0, is_causal: bool = False,
                                 scale=None):
    """F.scaled_dot_product_attention: softmax(q k^T * scale + mask) v, scale 1/sqrt(E)
    by default; is_causal keeps position i on keys j <= i (torch's tril of ones); a
    boolean attn_mask keeps where True, a float one is added. No dropout (pass 0)."""
    if dropout_p:
        raise ValueError("torchops.scaled_dot_product_attention: dropout_p > 0 cannot match torch's random "
                         "stream; pass 0.0")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    att = (q @ jnp.swapaxes(k, -2, -1)) * scale
    if is_causal:
        L, S = q.shape[-2], k.shape[-2]
        att = jnp.where(jnp.tril(jnp.ones((L, S), bool)), att, -jnp.inf)
    if attn_mask is not None:
        att = jnp.where(attn_mask, att, -jnp.inf) if attn_mask.dtype == jnp.bool_ else att + attn_mask
    return jax.nn.softmax(att, axis=-1) @ v


def adaptive_avg_pool2d(x, output_size):
    """F.adaptive_avg_pool2d on channels-last (N, H, W, C), for output sizes that divide
    H and W (each window then has one size, as torch's)."""
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    n, h, w, c = x.shape
    oh, ow = oh or h, ow or w
    if h % oh or w % ow:
        raise ValueError(f"torchops.adaptive_avg_pool2d: output {(oh, ow)} does not divide the map {(h, w)}")
    return x.reshape(n, oh, h // oh, ow, w // ow, c).mean(axis=(2, 4))


def avg_pool2d(x, kernel_size, stride=None):
    """F.avg_pool2d without padding on channels-last (N, H, W, C)."""
    k = (kernel_size,) * 2 if isinstance(kernel_size, int) else tuple(kernel_size)
    s = k if stride is None else ((stride,) * 2 if isinstance(stride, int) else tuple(stride))
    return nnx.avg_pool(x, k, strides=s, padding="VALID")


def masked_fill(x, mask, value):
    return jnp.where(mask, jnp.asarray(value, x.dtype), x)
