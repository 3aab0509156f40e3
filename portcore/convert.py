"""The one converter: a whole model's arrays between torch's names and layout (the
exchange format) and Flax NNX's state paths, through its layer kinds.

`layers` maps each torch layer path ("conv1", "blocks.2.attn") to its kind, in
execution order. The NNX path of a layer is the same attribute path ("blocks.2" ->
("blocks", 2)) unless `flax_paths` says otherwise (a renamed attribute, or the
nnx.Sequential form's ("layers", i)). A bare nn.Parameter of a module of the user's own
("pos_embedding", "encoder.cls_token") is a layer of its own at its full name (the
Parameter kind, relative name ""); the root module's path is "".
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from portcore.attention_kinds import AttentionOutProj, MultiheadAttention
from portcore.conv_kinds import Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d
from portcore.kinds import (BatchNorm, Dropout, Embedding, Flatten, LayerKind, LayerNorm,
                            Linear, MaxPool2d, Parameter)
from portcore.norm_kinds import GroupNorm
from portcore.recurrent_kinds import GRU, LSTM

Layers = Mapping[str, LayerKind]
KINDS = {k.torch_class: k for k in (Linear, Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d, MaxPool2d,
                                    Flatten, Dropout, BatchNorm, LayerNorm, GroupNorm, Embedding, LSTM, GRU,
                                    MultiheadAttention, AttentionOutProj)}


class NoKind(ValueError):
    """A torch class no layer kind knows (a module of the user's own)."""


def flax_path(torch_path: str) -> tuple:
    """'blocks.2.attn' -> ('blocks', 2, 'attn'): NNX keys list items by int; '' (the
    root) -> ()."""
    return tuple(int(p) if p.isdigit() else p for p in torch_path.split(".")) if torch_path else ()


def torch_name(layer: str, rel: str) -> str:
    """A tensor's full torch name: 'fc' and 'weight' -> 'fc.weight'; the root's own
    'weight'; a bare Parameter's layer path itself (rel '')."""
    return ".".join(p for p in (layer, rel) if p)


def _prefix(path: str, flax_paths) -> tuple:
    return tuple(flax_paths[path]) if flax_paths and path in flax_paths else flax_path(path)


def param_shapes(layers: Layers) -> dict[str, tuple]:
    """Trainable parameters: full torch names -> shapes."""
    return {torch_name(p, n): s for p, k in layers.items() for n, s in k.param_shapes().items()}


def state_shapes(layers: Layers) -> dict[str, tuple]:
    """Buffers that cross the API with the parameters (BatchNorm's running stats)."""
    return {torch_name(p, n): s for p, k in layers.items() for n, s in k.buffer_shapes().items()}


def torch_init(layers: Layers, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """torch's default distributions, layer by layer in order, float64."""
    return {torch_name(p, n): v for p, k in layers.items() for n, v in k.torch_init(rng).items()}


def flops(layers: Layers, in_shapes: Mapping[str, tuple]) -> int:
    """Forward FLOPs per sample, given each layer's input shape (without the batch)."""
    return sum(k.flops(in_shapes[p]) for p, k in layers.items() if p in in_shapes)


def to_flax(layers: Layers, arrays: Mapping[str, np.ndarray], flax_paths=None) -> dict[tuple, np.ndarray]:
    """{torch name: array} -> {NNX state path: array}. Entries a layer lacks (buffers of
    an optimizer moment) are left out; a missing parameter raises KeyError."""
    out = {}
    for path, kind in layers.items():
        names = {**kind.param_shapes(), **kind.buffer_shapes()}
        sub = {n: arrays[torch_name(path, n)] for n in names if torch_name(path, n) in arrays}
        if not sub:
            continue
        head = _prefix(path, flax_paths)
        try:
            converted = kind.to_flax(sub)
        except ValueError as error:            # name the layer: a model may hold several of a kind
            raise ValueError(f"torch layer {path!r}: {error}") from None
        out.update({head + rel: v for rel, v in converted.items()})
    return out


def from_flax(layers: Layers, arrays: Mapping[tuple, np.ndarray], flax_paths=None) -> dict[str, np.ndarray]:
    """{NNX state path: array} -> {torch name: array in torch's layout}."""
    out = {}
    for path, kind in layers.items():
        head = _prefix(path, flax_paths)
        sub = {k[len(head):]: v for k, v in arrays.items() if k[:len(head)] == head}
        if sub:
            out.update({torch_name(path, n): v for n, v in kind.from_flax(sub).items()})
    return out


def _one(v):
    return v[0] if len(set(v)) == 1 else tuple(v)      # 3 for (3, 3), as written


def _refuse(what: str):
    raise ValueError(f"{what}: not supported; pass a convert= entry")


def of_torch(module) -> LayerKind:
    """The kind of a torch layer, read from its attributes (no torch import here), or of
    a bare nn.Parameter (its shape). What no kind covers raises one ValueError line
    naming the layer and the option; a class no kind knows, NoKind. So does a class of
    the user's own named like torch's without torch's attributes (nanoGPT's LayerNorm
    holds weight and bias but no normalized_shape): its arrays are its own, as any
    other class of the user's (jaxport.translate writes such a class with them)."""
    try:
        return _of_torch(module)
    except AttributeError as error:
        if type(module).__module__.startswith("torch.") or type(module).__name__ == "Parameter":
            raise
        raise NoKind(f"{type(module).__name__} is a class of its own without torch's attributes ({error})") from None


def _of_torch(module) -> LayerKind:
    name = type(module).__name__
    if name == "Parameter":
        return Parameter(tuple(module.shape))
    if name in ("Linear", "NonDynamicallyQuantizableLinear"):
        cls = Linear if name == "Linear" else AttentionOutProj
        return cls(module.in_features, module.out_features, module.bias is not None)
    if name in ("Conv1d", "Conv2d", "ConvTranspose1d", "ConvTranspose2d"):
        if isinstance(module.padding, str) or module.padding_mode != "zeros":
            raise ValueError(f"{name} with padding {module.padding!r} / padding_mode {module.padding_mode!r}: "
                             "only numeric zero padding is supported (give its padding as numbers)")
        k, s, p, d = (_one(v) for v in (module.kernel_size, module.stride, module.padding, module.dilation))
        if "Transpose" not in name:
            return KINDS[name](module.in_channels, module.out_channels, k, s, p, module.bias is not None, d,
                               module.groups)
        if module.groups != 1:
            _refuse(f"nn.{name} with groups={module.groups} (nnx.ConvTranspose has no feature groups)")
        return KINDS[name](module.in_channels, module.out_channels, k, s, p, _one(module.output_padding), 1,
                           module.bias is not None, d)
    if name in ("BatchNorm1d", "BatchNorm2d"):
        return BatchNorm(module.num_features, module.eps, module.momentum)
    if name == "LayerNorm":
        if len(module.normalized_shape) != 1:
            raise ValueError(f"LayerNorm over {tuple(module.normalized_shape)}: only the last axis is supported")
        return LayerNorm(module.normalized_shape[-1], module.eps, getattr(module, "bias", None) is not None)
    if name == "GroupNorm":
        return GroupNorm(module.num_groups, module.num_channels, module.eps, module.affine)
    if name == "Embedding":
        if module.max_norm is not None:
            _refuse(f"nn.Embedding with max_norm={module.max_norm} (it renormalises rows in place)")
        return Embedding(module.num_embeddings, module.embedding_dim, module.padding_idx)
    if name in ("LSTM", "GRU"):
        if getattr(module, "proj_size", 0):
            _refuse(f"nn.LSTM with proj_size={module.proj_size}>0")
        if not module.bias:
            _refuse(f"nn.{name} with bias=False")
        return KINDS[name](module.input_size, module.hidden_size, num_layers=module.num_layers,
                           bidirectional=module.bidirectional)
    if name == "MultiheadAttention":
        if module.in_proj_weight is None:
            _refuse("nn.MultiheadAttention with kdim/vdim other than embed_dim (separate q/k/v weights)")
        if module.bias_k is not None:
            _refuse("nn.MultiheadAttention with add_bias_kv=True")
        return MultiheadAttention(module.embed_dim, module.num_heads, module.in_proj_bias is not None)
    if name in ("MaxPool2d", "Flatten", "Dropout", "SharedDropout"):
        # SharedDropout (the deep examples'): its `step` buffer picks the mask, and
        # travels with the weights like BatchNorm's running statistics
        return {"MaxPool2d": lambda: MaxPool2d(module.kernel_size), "Flatten": Flatten,
                "Dropout": lambda: Dropout(module.p),
                "SharedDropout": lambda: Dropout(module.p, counter=True)}[name]()
    raise NoKind(f"no layer kind for torch's {name}")
