"""nn.MultiheadAttention's layer kinds. numpy only.

torch keeps the three input projections packed in one `in_proj_weight` (3E, E), rows
q, k, v, with `in_proj_bias` (3E,), and the output projection in a submodule
`out_proj` (an nn.Linear subclass, NonDynamicallyQuantizableLinear). The NNX side
(jaxport.nn.MultiheadAttention) holds four nnx.Linear: q_proj, k_proj, v_proj,
out_proj. The attention module's kind covers its own two arrays; `out_proj` is a
layer of its own, as torch's named_modules lists it: {"attn": MultiheadAttention(E,
H), "attn.out_proj": AttentionOutProj(E, E)}.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from portcore.kinds import LayerKind, Linear

PROJECTIONS = ("q_proj", "k_proj", "v_proj")          # torch's row blocks, in order


@dataclass(frozen=True)
class MultiheadAttention(LayerKind):
    """in_proj_weight rows k*E:(k+1)*E are PROJECTIONS[k]'s kernel, transposed."""
    embed_dim: int
    num_heads: int
    bias: bool = True
    torch_class: ClassVar[str] = "MultiheadAttention"

    def param_shapes(self):
        e = self.embed_dim
        shapes = {"in_proj_weight": (3 * e, e)}
        return {**shapes, "in_proj_bias": (3 * e,)} if self.bias else shapes

    @property
    def fan_in(self):
        return self.embed_dim

    def torch_init(self, rng):
        # xavier_uniform_ over the packed (3E, E) matrix: bound sqrt(6 / (E + 3E)); bias 0
        bound = math.sqrt(6.0 / (4 * self.embed_dim))
        out = {"in_proj_weight": rng.uniform(-bound, bound, size=(3 * self.embed_dim, self.embed_dim))}
        return {**out, "in_proj_bias": np.zeros(3 * self.embed_dim)} if self.bias else out

    def flops(self, in_shape):
        """Self-attention over in_shape (L, E): the three projections, the scores and
        the weighted sum of the values (out_proj is counted by its own kind)."""
        length, e = in_shape[0], self.embed_dim
        return 3 * 2 * length * e * e + 2 * 2 * length * length * e

    def to_flax(self, arrays):
        w, e, out = np.asarray(arrays["in_proj_weight"]), self.embed_dim, {}
        for k, name in enumerate(PROJECTIONS):
            out[(name, "kernel")] = np.ascontiguousarray(w[k * e:(k + 1) * e].T)
            if self.bias:
                out[(name, "bias")] = np.asarray(arrays["in_proj_bias"])[k * e:(k + 1) * e]
        return out

    def from_flax(self, arrays):
        out = {"in_proj_weight": np.ascontiguousarray(
            np.concatenate([np.asarray(arrays[(n, "kernel")]).T for n in PROJECTIONS]))}
        if self.bias:
            out["in_proj_bias"] = np.concatenate([np.asarray(arrays[(n, "bias")]) for n in PROJECTIONS])
        return out


@dataclass(frozen=True)
class AttentionOutProj(Linear):
    """nn.MultiheadAttention's out_proj: an nn.Linear (the same rule), whose bias torch's
    attention starts at zero."""
    torch_class: ClassVar[str] = "NonDynamicallyQuantizableLinear"

    def torch_init(self, rng):
        out = super().torch_init(rng)
        return {**out, "bias": np.zeros(self.out_features)} if self.bias else out
