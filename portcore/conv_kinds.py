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
