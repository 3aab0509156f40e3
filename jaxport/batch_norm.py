"""BatchNorm's training-mode statistics and gradients summed as torch's CPU kernel sums
them: over each image's positions in the array's dtype, then over the batch in twice
its precision (torch accumulates the per-image sums in double).

Why: one float32 XLA reduction over N x H x W (what nnx.BatchNorm and autodiff's
transpose of a broadcast give) left the ResNet BasicBlock's BatchNorm weight and bias
gradients 10-26x further from torch float64 than torch float32's own, and the float32
parity verdict failed on inits where a correct port should pass. The per-channel sums
feed every element of the input's gradient (dbeta / n, dgamma / n), so their rounding
is one shift of a whole channel, which the layer before sums again: summed per image
alone, 2 of 6 inits still failed; with the batch sum in double-float too, none
(docs/design.md, "BatchNorm in float32"). The backward is written out (custom_vjp)
because autodiff would turn dbeta = sum(dy) and dgamma = sum(dy * xhat) back into
one reduction.

x is (N, ..., C) with channels last; mask (N,) or None marks the rows that count (the
compiled loop pads the last partial batch). Rows outside the mask get no gradient and
are assumed to carry none (the loop's loss weighs them 0).
Twin: torch's nn.BatchNorm2d itself (torchref/cnn.py).
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp


def _sum_rows(v, mask):
    # (N, ..., C) -> (C,): each row's positions in v's dtype, then the rows that count
    per_row = v.sum(axis=tuple(range(1, v.ndim - 1))) if v.ndim > 2 else v
    if mask is not None:
        per_row = jnp.where(mask[:, None], per_row, jnp.zeros_like(per_row))
    return _double_float_sum(per_row)


def _double_float_sum(rows):
    """(N, C) -> (C,): a pairwise sum over N carrying each partial as hi + lo (Knuth's
    TwoSum keeps what every addition rounds away): about twice the dtype's precision
    with no 64-bit type, which jax has only under jax_enable_x64, and no loop."""
    hi, lo = rows, jnp.zeros_like(rows)
    while hi.shape[0] > 1:
        if hi.shape[0] % 2:
            pad = jnp.zeros((1,) + hi.shape[1:], hi.dtype)
            hi, lo = jnp.concatenate([hi, pad]), jnp.concatenate([lo, pad])
        half = hi.shape[0] // 2
        a, b = hi[:half], hi[half:]
        s = a + b
        b_virtual = s - a
        err = (a - (s - b_virtual)) + (b - b_virtual)
        lo = lo[:half] + lo[half:] + err
        hi = s + lo                                          # renormalise: |lo| stays below hi's ulp
        lo = lo - (hi - s)
    return hi[0] + lo[0]


def count(x, mask):
    """The values per channel that the statistics average: n of torch's n / (n - 1)."""
    per_row = x.size // (x.shape[0] * x.shape[-1])
    rows = x.shape[0] if mask is None else jnp.sum(mask)
    return jnp.asarray(rows * per_row, x.dtype)


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def batch_norm_train(x, scale, bias, mask, eps):
    """(y, mean, biased var) of a training-mode BatchNorm; mean and var for the running
    statistics only (their cotangents are ignored: callers stop their gradients)."""
    return _forward(x, scale, bias, mask, eps)[0]


def _forward(x, scale, bias, mask, eps):
    n = count(x, mask)
    mean = _sum_rows(x, mask) / n
    centred = x - mean
    var = _sum_rows(centred * centred, mask) / n
    inv = jax.lax.rsqrt(var + eps)
    y = centred * (inv * scale) + bias
    return (y, mean, var), (centred, inv, scale, mask, n)


def _backward(eps, residuals, cotangents):
    centred, inv, scale, mask, n = residuals
    dy = cotangents[0]
    if mask is not None:
        dy = jnp.where(mask.reshape((-1,) + (1,) * (dy.ndim - 1)), dy, jnp.zeros_like(dy))
    xhat = centred * inv
    dbias = _sum_rows(dy, mask)
    dscale = _sum_rows(dy * xhat, mask)
    dx = (scale * inv) * (dy - dbias / n - xhat * (dscale / n))
    if mask is not None:
        dx = jnp.where(mask.reshape((-1,) + (1,) * (dx.ndim - 1)), dx, jnp.zeros_like(dx))
    return dx, dscale, dbias, None                          # None: the mask has no gradient


batch_norm_train.defvjp(_forward, _backward)
