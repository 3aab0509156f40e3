"""nn.Conv1d, nn.Conv2d and nn.ConvTranspose2d as nnx.Conv / nnx.ConvTranspose, built
with torch's init and padding. Channels last: (N, L, C) and (N, H, W, C), where torch
takes (N, C, L) and (N, C, H, W). Kernel shapes and the conversion rules are
portcore/conv_kinds.py's. Twins: torch.nn.Conv1d, Conv2d, ConvTranspose2d."""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxport.layers import uniform_symmetric
from portcore.conv_kinds import ConvTranspose2d


def _tuple(v, n, what, where):
    out = tuple(v) if isinstance(v, (tuple, list)) else (v,) * n
    if len(out) != n or not all(isinstance(i, (int, np.integer)) for i in out):
        raise ValueError(f"jaxport.nn.{where}: {what}={v!r}; pass an int or {n} ints (string padding: "
                         "give the numbers)")
    return tuple(int(i) for i in out)


def _conv(n, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, rngs, dtype, where):
    k, s, p, d = (_tuple(v, n, w, where) for v, w in ((kernel_size, "kernel_size"), (stride, "stride"),
                                                       (padding, "padding"), (dilation, "dilation")))
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"jaxport.nn.{where}: groups={groups} must divide in_channels {in_channels} "
                         f"and out_channels {out_channels}")
    bound = 1.0 / math.sqrt(in_channels // groups * int(np.prod(k)))    # kaiming_uniform(a=sqrt(5))
    return nnx.Conv(in_channels, out_channels, k, strides=s, padding=tuple((i, i) for i in p), kernel_dilation=d,
                    feature_group_count=groups, use_bias=bias, kernel_init=uniform_symmetric(bound),
                    bias_init=uniform_symmetric(bound), dtype=dtype, param_dtype=dtype, rngs=rngs)


def conv1d(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True, *,
           rngs: nnx.Rngs, dtype=jnp.float32) -> nnx.Conv:
    """nnx.Conv like torch.nn.Conv1d(...): kernel (k, I / groups, O), input (N, L, C),
    U(+-1/sqrt(fan_in)) for kernel and bias (Flax: lecun_normal, zero bias), and torch's
    symmetric zero padding (Flax's default is 'SAME')."""
    return _conv(1, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, rngs, dtype,
                 "conv1d")


def conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True, *,
           rngs: nnx.Rngs, dtype=jnp.float32) -> nnx.Conv:
    """nnx.Conv like torch.nn.Conv2d(...), any of non-square kernel, stride, padding,
    dilation and groups: kernel (kh, kw, I / groups, O), input NHWC; init and padding
    as conv1d's."""
    return _conv(2, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, rngs, dtype,
                 "conv2d")


def conv_transpose2d(in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                     bias=True, dilation=1, *, rngs: nnx.Rngs, dtype=jnp.float32) -> nnx.ConvTranspose:
    """nnx.ConvTranspose like torch.nn.ConvTranspose2d(...) (torch's argument order), input
    NHWC. torch's op is the gradient of a conv: the kernel (kh, kw, I, O) holds torch's
    weight flipped in space (portcore.conv_kinds.ConvTranspose2d converts it), padding p
    is Flax's dilation * (k - 1) - p on each side, output_padding more after; init
    U(+-1/sqrt(O * kh * kw)), torch's fan_in of its (I, O, kh, kw) weight."""
    where = "conv_transpose2d"
    k, s, p, op, d = (_tuple(v, 2, w, where) for v, w in (
        (kernel_size, "kernel_size"), (stride, "stride"), (padding, "padding"),
        (output_padding, "output_padding"), (dilation, "dilation")))
    if groups != 1:
        raise ValueError(f"jaxport.nn.{where}: groups={groups}; nnx.ConvTranspose has no feature groups, pass 1")
    if any(op[i] >= max(s[i], d[i]) for i in range(2)):
        raise ValueError(f"jaxport.nn.{where}: output_padding {op} must be smaller than stride {s} or "
                         f"dilation {d} (torch's rule)")
    kind = ConvTranspose2d(in_channels, out_channels, k, s, p, op, 1, bias, d)
    bound = 1.0 / math.sqrt(kind.fan_in)
    return nnx.ConvTranspose(in_channels, out_channels, k, strides=s, padding=kind.flax_padding(), kernel_dilation=d,
                             use_bias=bias, kernel_init=uniform_symmetric(bound), bias_init=uniform_symmetric(bound),
                             dtype=dtype, param_dtype=dtype, rngs=rngs)
