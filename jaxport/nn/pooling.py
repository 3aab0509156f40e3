"""nn.MaxPool2d / F.max_pool2d on NHWC input, with torch's padding and its routing of
tied maxima's gradient. Twin: torch.nn.functional.max_pool2d."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _pair(v, what):
    out = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(out) != 2 or not all(isinstance(i, int) and i >= 0 for i in out):
        raise ValueError(f"jaxport.nn.max_pool2d: {what}={v!r}; pass an int or a pair of ints")
    return out


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """torch.nn.functional.max_pool2d(x, kernel_size, stride, padding) on x (N, H, W, C)
    (channels last, torch's is NCHW). What differs from nnx.max_pool: the padding is
    -inf (a padded entry never wins, as torch's), at most half the kernel (torch's rule),
    and a window's gradient goes to its first maximum in row-major order, as torch's
    CPU kernel routes ties (XLA's reduce_window gradient may pick another of the tied
    entries: O(1) differences on constant image regions). Windows that overlap
    (stride < kernel) add their gradients. No dilation, ceil_mode or return_indices."""
    k, s, p = _pair(kernel_size, "kernel_size"), _pair(kernel_size if stride is None else stride, "stride"), \
        _pair(padding, "padding")
    if min(k) < 1 or min(s) < 1:
        raise ValueError(f"jaxport.nn.max_pool2d: kernel_size {k} and stride {s} must be positive")
    if any(2 * p[i] > k[i] for i in range(2)):
        raise ValueError(f"jaxport.nn.max_pool2d: padding {p} is more than half the kernel {k} (torch refuses it)")
    if x.ndim != 4 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"jaxport.nn.max_pool2d: input {x.shape} {x.dtype}; pass a float (N, H, W, C) array")
    return _pool(x, k, s, p, tuple(x.shape[1:3]))


def _out(x_hw, k, s, p):
    return tuple((x_hw[i] + 2 * p[i] - k[i]) // s[i] + 1 for i in range(2))


def _slot(i, j, out_hw, s):
    """The padded input's entries that window offset (i, j) reads, over all windows."""
    return (slice(None), slice(i, i + s[0] * (out_hw[0] - 1) + 1, s[0]),
            slice(j, j + s[1] * (out_hw[1] - 1) + 1, s[1]), slice(None))


def _windows(x, k, s, p):                             # -> (N, OH, OW, C, kh * kw), offsets row-major
    out_hw = _out(x.shape[1:3], k, s, p)
    xp = jnp.pad(x, ((0, 0), (p[0], p[0]), (p[1], p[1]), (0, 0)), constant_values=-jnp.inf)
    return jnp.stack([xp[_slot(i, j, out_hw, s)] for i in range(k[0]) for j in range(k[1])], axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _pool(x, k, s, p, hw):
    return _windows(x, k, s, p).max(axis=-1)


def _pool_fwd(x, k, s, p, hw):
    windows = _windows(x, k, s, p)
    return windows.max(axis=-1), jnp.argmax(windows, axis=-1)      # argmax: the first of equal maxima


def _pool_bwd(k, s, p, hw, first, g):                 # g (N, OH, OW, C)
    (h, w), out_hw = hw, g.shape[1:3]
    grad = jnp.zeros((g.shape[0], h + 2 * p[0], w + 2 * p[1], g.shape[3]), g.dtype)
    for i in range(k[0]):
        for j in range(k[1]):
            routed = jnp.where(first == i * k[1] + j, g, jnp.zeros((), g.dtype))
            grad = grad.at[_slot(i, j, out_hw, s)].add(routed)
    return (grad[:, p[0]:p[0] + h, p[1]:p[1] + w, :],)


_pool.defvjp(_pool_fwd, _pool_bwd)
