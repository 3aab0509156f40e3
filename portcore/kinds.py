"""Layer kinds: what each torch layer holds, and its one torch <-> Flax NNX rule.

A model is described by a mapping {torch attribute path: kind}, e.g.
{"conv1": Conv2d(1, 16, 3, padding=1), "fc": Linear(128, 10, input_chw=(32, 2, 2))}.
Each kind knows its parameter (and buffer) names and shapes in torch's layout, torch's
default initial distribution, its FLOPs, and how its arrays map onto the Flax NNX
module that does the same job. `to_flax`/`from_flax` below apply the kinds to a whole
model; both backends, the command line and the parity suite convert through them, so
each layout rule is written once (docs/design.md, "Layer kinds"). The recurrent kinds
are in recurrent_kinds.py, the convolutions in conv_kinds.py, the whole-model converter
in convert.py.

numpy only. Arrays go in and out in their own dtype; every rule is a permutation,
reshape or split of entries, so a round trip is bit-exact (except LSTM with
`flax_input_bias=False`, where Flax has one bias for torch's two: see LSTM).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Mapping

import numpy as np

Path = tuple                      # a Flax state path: ("conv1", "kernel"), ("layers", 0, "bias")


def uniform(rng, bound, shape):
    """U(-bound, bound) of `shape`, torch's default init for weights and biases."""
    return rng.uniform(-bound, bound, size=shape)


@dataclass(frozen=True)
class LayerKind:
    """A layer without parameters (activation-free pools, Flatten, Dropout)."""
    torch_class: ClassVar[str] = ""

    def param_shapes(self) -> dict[str, tuple]:
        """torch parameter names (relative to the layer) -> shapes in torch's layout."""
        return {}

    def buffer_shapes(self) -> dict[str, tuple]:
        """State that is not trained but crosses the API (BatchNorm's running stats)."""
        return {}

    @property
    def fan_in(self) -> int:
        return 0

    def torch_init(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """torch's default initial distribution, drawn from a numpy generator (float64)."""
        return {}

    def flops(self, in_shape: tuple) -> int:
        """Forward FLOPs per sample (a multiply-add is 2), for an input of `in_shape`
        (without the batch axis)."""
        return 0

    def to_flax(self, arrays: Mapping[str, np.ndarray]) -> dict[Path, np.ndarray]:
        """torch-named arrays -> {path relative to the Flax module: array}."""
        return {}

    def from_flax(self, arrays: Mapping[Path, np.ndarray]) -> dict[str, np.ndarray]:
        return {}


@dataclass(frozen=True)
class Parameter(LayerKind):
    """A bare nn.Parameter held by a module of the user's own (a learned position table,
    a class token): a layer of its own at its full torch name, its relative name "",
    one to one onto the NNX attribute of the same path (an nnx.Param of the same shape).
    Its initial values are the model's own (no torch default to draw)."""
    shape: tuple
    torch_class: ClassVar[str] = "Parameter"

    def param_shapes(self):
        return {"": tuple(self.shape)}

    def torch_init(self, rng):
        raise ValueError("a bare nn.Parameter has no torch default init: its values are the model's own")

    def to_flax(self, arrays):
        return {(): np.asarray(arrays[""])}

    def from_flax(self, arrays):
        return {"": np.asarray(arrays[()])}


@dataclass(frozen=True)
class Buffer(Parameter):
    """A bare buffer (register_buffer) of a module of the user's own: as Parameter, but
    state that crosses with the weights, not trained (an nnx.BatchStat or another
    nnx.Variable at the same path)."""
    torch_class: ClassVar[str] = "Buffer"

    def param_shapes(self):
        return {}

    def buffer_shapes(self):
        return {"": tuple(self.shape)}


@dataclass(frozen=True)
class Linear(LayerKind):
    """torch weight (out, in), y = x W^T + b; Flax kernel (in, out), y = x K + b.

    input_chw: set on the first Linear after a conv. torch flattens (C, H, W) feature
    maps channel-major; NNX's NHWC maps flatten as (H, W, C). The weight's input
    columns are permuted accordingly, so each model can flatten the idiomatic way.
    """
    in_features: int
    out_features: int
    bias: bool = True
    input_chw: tuple | None = None
    torch_class: ClassVar[str] = "Linear"

    def param_shapes(self):
        shapes = {"weight": (self.out_features, self.in_features)}
        return {**shapes, "bias": (self.out_features,)} if self.bias else shapes

    @property
    def fan_in(self):
        return self.in_features

    def torch_init(self, rng):
        # kaiming_uniform(a=sqrt(5)) works out to U(+-1/sqrt(fan_in)); the bias likewise.
        bound = 1.0 / math.sqrt(self.fan_in)
        return {n: uniform(rng, bound, s) for n, s in self.param_shapes().items()}

    def flops(self, in_shape):
        return 2 * self.in_features * self.out_features

    def to_flax(self, arrays):
        w = np.asarray(arrays["weight"])
        if self.input_chw is not None:
            c, h, wd = self.input_chw
            w = w.reshape(self.out_features, c, h, wd).transpose(0, 2, 3, 1).reshape(self.out_features, -1)
        out = {("kernel",): np.ascontiguousarray(w.T)}
        return {**out, ("bias",): np.asarray(arrays["bias"])} if self.bias else out

    def from_flax(self, arrays):
        w = np.asarray(arrays[("kernel",)]).T
        if self.input_chw is not None:
            c, h, wd = self.input_chw
            w = w.reshape(self.out_features, h, wd, c).transpose(0, 3, 1, 2).reshape(self.out_features, -1)
        out = {"weight": np.ascontiguousarray(w)}
        return {**out, "bias": np.asarray(arrays[("bias",)])} if self.bias else out


@dataclass(frozen=True)
class MaxPool2d(LayerKind):
    kernel_size: int
    torch_class: ClassVar[str] = "MaxPool2d"


@dataclass(frozen=True)
class Flatten(LayerKind):
    torch_class: ClassVar[str] = "Flatten"


@dataclass(frozen=True)
class Dropout(LayerKind):
    """counter=True: the shared-mask dropout of both backends (portcore/dropout_hash.py),
    whose one piece of state, `step` (its count of train-mode calls, which picks the
    mask), crosses the API with the weights, like BatchNorm's running stats."""
    p: float = 0.5
    counter: bool = False
    torch_class: ClassVar[str] = "Dropout"

    def buffer_shapes(self):
        return {"step": (1,)} if self.counter else {}   # (1,): safetensors stores no 0-d arrays

    def torch_init(self, rng):
        return {"step": np.zeros(1)} if self.counter else {}

    def to_flax(self, arrays):
        return {("step",): np.asarray(arrays["step"])} if "step" in arrays else {}

    def from_flax(self, arrays):
        return {"step": np.asarray(arrays[("step",)])} if ("step",) in arrays else {}


@dataclass(frozen=True)
class _Norm(LayerKind):
    """weight/bias <-> scale/bias, elementwise, no layout change."""

    def _features(self) -> int:
        raise NotImplementedError

    def param_shapes(self):
        return {"weight": (self._features(),), "bias": (self._features(),)}

    def torch_init(self, rng):
        n = self._features()
        return {"weight": np.ones(n), "bias": np.zeros(n)}

    def flops(self, in_shape):
        return 4 * int(np.prod(in_shape))

    def to_flax(self, arrays):
        return {("scale",): np.asarray(arrays["weight"]), ("bias",): np.asarray(arrays["bias"])}

    def from_flax(self, arrays):
        return {"weight": np.asarray(arrays[("scale",)]), "bias": np.asarray(arrays[("bias",)])}


@dataclass(frozen=True)
class BatchNorm(_Norm):
    """BatchNorm1d/2d. The running statistics cross as buffers (running_mean <-> mean,
    running_var <-> var). Two conventions differ and are the model's business, not the
    converter's: Flax's momentum is torch's 1 - momentum (`flax_momentum`), and torch
    updates running_var with the unbiased batch variance, Flax with the biased one."""
    num_features: int
    eps: float = 1e-5
    momentum: float = 0.1
    torch_class: ClassVar[str] = "BatchNorm2d"

    def _features(self):
        return self.num_features

    @property
    def flax_momentum(self) -> float:
        return 1.0 - self.momentum

    def buffer_shapes(self):
        return {"running_mean": (self.num_features,), "running_var": (self.num_features,)}

    def torch_init(self, rng):
        n = self.num_features
        return {**super().torch_init(rng), "running_mean": np.zeros(n), "running_var": np.ones(n)}

    def to_flax(self, arrays):
        out = super().to_flax(arrays)
        if "running_mean" in arrays:
            out.update({("mean",): np.asarray(arrays["running_mean"]), ("var",): np.asarray(arrays["running_var"])})
        return out

    def from_flax(self, arrays):
        out = super().from_flax(arrays)
        if ("mean",) in arrays:
            out.update({"running_mean": np.asarray(arrays[("mean",)]), "running_var": np.asarray(arrays[("var",)])})
        return out


@dataclass(frozen=True)
class LayerNorm(_Norm):
    """torch eps 1e-5 and Flax's default 1e-6 differ: build the NNX side with `eps`.
    bias False: torch's LayerNorm(bias=False), nnx.LayerNorm(use_bias=False)."""
    normalized_shape: int
    eps: float = 1e-5
    bias: bool = True
    torch_class: ClassVar[str] = "LayerNorm"

    def _features(self):
        return self.normalized_shape

    def param_shapes(self):
        shapes = super().param_shapes()
        return shapes if self.bias else {"weight": shapes["weight"]}

    def torch_init(self, rng):
        out = super().torch_init(rng)
        return out if self.bias else {"weight": out["weight"]}

    def to_flax(self, arrays):
        return super().to_flax(arrays) if self.bias else {("scale",): np.asarray(arrays["weight"])}

    def from_flax(self, arrays):
        return super().from_flax(arrays) if self.bias else {"weight": np.asarray(arrays[("scale",)])}


@dataclass(frozen=True)
class Embedding(LayerKind):
    """torch weight (num, dim) <-> Flax embedding (num, dim): the same layout.
    padding_idx: torch starts that row at zero and never trains it (its gradient is
    zero: jaxport.nn.Embedding); a weight file carries it as it is."""
    num_embeddings: int
    embedding_dim: int
    padding_idx: int | None = None
    torch_class: ClassVar[str] = "Embedding"

    def param_shapes(self):
        return {"weight": (self.num_embeddings, self.embedding_dim)}

    def torch_init(self, rng):
        weight = rng.standard_normal((self.num_embeddings, self.embedding_dim))
        if self.padding_idx is not None:
            weight[self.padding_idx] = 0.0
        return {"weight": weight}

    def to_flax(self, arrays):
        return {("embedding",): np.asarray(arrays["weight"])}

    def from_flax(self, arrays):
        return {"weight": np.asarray(arrays[("embedding",)])}

