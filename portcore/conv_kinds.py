"""The convolution layer kinds (portcore/kinds.py has the others): torch's weight
(O, I / groups, *kernel) on channels-first inputs, Flax's kernel (*kernel, I / groups, O)
on channels-last ones. numpy only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from portcore.kinds import LayerKind, uniform


@dataclass(frozen=True)
class Conv2d(LayerKind):
    """torch weight OIHW on NCHW inputs; Flax kernel HWIO on NHWC inputs. The rule is
    the transpose (2, 3, 1, 0), not `.T` (which gives WHIO: on a square kernel it has
    the right shape and the wrong entries). Kernel, stride, padding and dilation are an
    int or an (h, w) pair, as torch takes them; groups split the input channels (torch's
    weight is (O, I / groups, kh, kw), Flax's kernel (kh, kw, I / groups, O) with
    nnx.Conv's feature_group_count)."""
    in_channels: int
    out_channels: int
    kernel_size: object                  # int or (kh, kw)
    stride: object = 1
    padding: object = 0
    bias: bool = True
    dilation: object = 1
    groups: int = 1
    torch_class: ClassVar[str] = "Conv2d"
    spatial: ClassVar[int] = 2

    def _pair(self, v) -> tuple:
        return tuple(v) if isinstance(v, (tuple, list)) else (v,) * self.spatial

    def param_shapes(self):
        shapes = {"weight": (self.out_channels, self.in_channels // self.groups, *self._pair(self.kernel_size))}
        return {**shapes, "bias": (self.out_channels,)} if self.bias else shapes

    @property
    def fan_in(self):
        return self.in_channels // self.groups * int(np.prod(self._pair(self.kernel_size)))

    def torch_init(self, rng):
        bound = 1.0 / math.sqrt(self.fan_in)
        return {n: uniform(rng, bound, s) for n, s in self.param_shapes().items()}

    def out_hw(self, *sizes):
        k, s, p, d = (self._pair(v) for v in (self.kernel_size, self.stride, self.padding, self.dilation))
        return tuple((n + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i, n in enumerate(sizes))

    def flops(self, in_shape):
        return 2 * self.fan_in * self.out_channels * int(np.prod(self.out_hw(*in_shape[1:])))

    def to_flax(self, arrays):
        w = np.asarray(arrays["weight"])             # (O, I, *k) -> (*k, I, O)
        out = {("kernel",): np.ascontiguousarray(w.transpose(*range(2, w.ndim), 1, 0))}
        return {**out, ("bias",): np.asarray(arrays["bias"])} if self.bias else out

    def from_flax(self, arrays):
        k = np.asarray(arrays[("kernel",)])          # (*k, I, O) -> (O, I, *k)
        out = {"weight": np.ascontiguousarray(k.transpose(k.ndim - 1, k.ndim - 2, *range(k.ndim - 2)))}
        return {**out, "bias": np.asarray(arrays[("bias",)])} if self.bias else out


@dataclass(frozen=True)
class Conv1d(Conv2d):
    """torch weight (O, I, k) on (N, C, L) inputs; Flax kernel (k, I, O) on (N, L, C)."""
    torch_class: ClassVar[str] = "Conv1d"
    spatial: ClassVar[int] = 1


@dataclass(frozen=True)
class ConvTranspose2d(LayerKind):
    """torch's ConvTranspose2d is the gradient of a Conv2d with respect to its input: its
    weight is (I, O / groups, kh, kw), and it slides the kernel flipped in space over
    the stride-dilated input. nnx.ConvTranspose (transpose_kernel=False, its default)
    slides its kernel (kh, kw, I, O) unflipped: the rule transposes (2, 3, 0, 1) and
    flips both spatial axes. flax_transpose_kernel=True: nnx.ConvTranspose(...,
    transpose_kernel=True), whose kernel (kh, kw, O, I) lax flips and swaps itself: the
    transpose (2, 3, 1, 0) alone. torch's padding p is Flax's explicit padding
    dilation * (k - 1) - p on each side, output_padding more after (`flax_padding`).
    Arguments in torch's order; nnx.ConvTranspose has no feature groups (groups=1)."""
    in_channels: int
    out_channels: int
    kernel_size: object
    stride: object = 1
    padding: object = 0
    output_padding: object = 0
    groups: int = 1
    bias: bool = True
    dilation: object = 1
    flax_transpose_kernel: bool = False
    torch_class: ClassVar[str] = "ConvTranspose2d"
    spatial: ClassVar[int] = 2

    def _pair(self, v) -> tuple:
        return tuple(v) if isinstance(v, (tuple, list)) else (v,) * self.spatial

    def param_shapes(self):
        shapes = {"weight": (self.in_channels, self.out_channels // self.groups, *self._pair(self.kernel_size))}
        return {**shapes, "bias": (self.out_channels,)} if self.bias else shapes

    @property
    def fan_in(self):
        # torch's init reads fan_in off the weight's axis 1: O / groups, not I
        return self.out_channels // self.groups * int(np.prod(self._pair(self.kernel_size)))

    def torch_init(self, rng):
        bound = 1.0 / math.sqrt(self.fan_in)
        return {n: uniform(rng, bound, s) for n, s in self.param_shapes().items()}

    def flax_padding(self) -> tuple:
        k, p, op, d = (self._pair(v) for v in (self.kernel_size, self.padding, self.output_padding, self.dilation))
        return tuple((d[i] * (k[i] - 1) - p[i], d[i] * (k[i] - 1) - p[i] + op[i]) for i in range(self.spatial))

    def out_hw(self, *sizes):
        k, s, p, op, d = (self._pair(v) for v in (self.kernel_size, self.stride, self.padding,
                                                  self.output_padding, self.dilation))
        return tuple((n - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op[i] + 1 for i, n in enumerate(sizes))

    def flops(self, in_shape):
        # every input entry meets every kernel entry once (the scatter form of the op)
        per_input = self.in_channels * self.out_channels // self.groups * int(np.prod(self._pair(self.kernel_size)))
        return 2 * per_input * int(np.prod(in_shape[1:]))

    def _flip(self, k):
        return k if self.flax_transpose_kernel else k[tuple(slice(None, None, -1) for _ in range(self.spatial))]

    def to_flax(self, arrays):
        w = np.asarray(arrays["weight"])             # (I, O, *k) -> (*k, I, O) flipped, or (*k, O, I)
        axes = (1, 0) if self.flax_transpose_kernel else (0, 1)
        out = {("kernel",): np.ascontiguousarray(self._flip(w.transpose(*range(2, w.ndim), *axes)))}
        return {**out, ("bias",): np.asarray(arrays["bias"])} if self.bias else out

    def from_flax(self, arrays):
        k = self._flip(np.asarray(arrays[("kernel",)]))
        axes = (k.ndim - 1, k.ndim - 2) if self.flax_transpose_kernel else (k.ndim - 2, k.ndim - 1)
        out = {"weight": np.ascontiguousarray(k.transpose(*axes, *range(k.ndim - 2)))}
        return {**out, "bias": np.asarray(arrays[("bias",)])} if self.bias else out


@dataclass(frozen=True)
class ConvTranspose1d(ConvTranspose2d):
    """torch weight (I, O, k) on (N, C, L); nnx.ConvTranspose kernel (k, I, O) on (N, L, C)."""
    torch_class: ClassVar[str] = "ConvTranspose1d"
    spatial: ClassVar[int] = 1
