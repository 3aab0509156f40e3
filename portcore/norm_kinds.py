"""GroupNorm's layer kind (the other norms are in portcore/kinds.py). numpy only."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from portcore.kinds import LayerKind


@dataclass(frozen=True)
class GroupNorm(LayerKind):
    """torch weight/bias (C,) on channels-first input <-> nnx.GroupNorm scale/bias (C,)
    on channels-last input: no layout change. Both split the channels into num_groups
    contiguous runs; torch's eps is 1e-5 and Flax's default epsilon 1e-6, so build the
    NNX side with `eps` (jaxport.nn.GroupNorm does). affine=False: no arrays."""
    num_groups: int
    num_channels: int
    eps: float = 1e-5
    affine: bool = True
    torch_class: ClassVar[str] = "GroupNorm"

    def param_shapes(self):
        c = (self.num_channels,)
        return {"weight": c, "bias": c} if self.affine else {}

    def torch_init(self, rng):
        n = self.num_channels
        return {"weight": np.ones(n), "bias": np.zeros(n)} if self.affine else {}

    def flops(self, in_shape):
        return 4 * int(np.prod(in_shape))

    def to_flax(self, arrays):
        return {("scale",): np.asarray(arrays["weight"]), ("bias",): np.asarray(arrays["bias"])} if arrays else {}

    def from_flax(self, arrays):
        return {"weight": np.asarray(arrays[("scale",)]), "bias": np.asarray(arrays[("bias",)])} if arrays else {}
