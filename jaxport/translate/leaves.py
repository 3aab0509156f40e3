"""torch's own layer classes -> the NNX layer the generated __init__ builds and the
call its __call__ writes. Each layer with parameters is built from jaxport.nn (the
torch-semantics layers at the attribute paths the layer kinds convert onto), so
check_port loads torch's weights without a hook. Parameter-free layers become the
functions they compute, written inline.

`layout` as in ops.py: "cl" layers (convs, pools, BatchNorm, GroupNorm) run channels
last, "torch" ones need torch's layout, "any" ones are elementwise.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from jaxport.translate.trace import Untranslatable


@dataclass(frozen=True)
class Leaf:
    ctor: str | None          # the NNX layer's constructor source; None: nothing to hold
    call: str                 # the call, {self} the attribute, {x} the input, {args} all inputs
    layout: str
    item: str = "None"        # what stands at its index in a generated nnx.Sequential, if no ctor


def _kw(**kw) -> str:
    return "".join(f", {k}={v!r}" for k, v in kw.items())


def _one(v):
    return v[0] if isinstance(v, tuple) and len(set(v)) == 1 else v


RNG = ", rngs=rngs, dtype=dtype"


def leaf(m, where: str) -> Leaf:
    """The Leaf for torch module `m`; Untranslatable names what is not covered."""
    name = type(m).__name__

    def refuse(what, advice):
        raise Untranslatable(f"nn.{name} with {what}", where, advice)
    if name == "Linear":
        if m.bias is None:
            return Leaf(f"torchops.linear({m.in_features}, {m.out_features}, bias=False{RNG})", "{self}({x})", "torch")
        return Leaf(f"jnn.torch_linear({m.in_features}, {m.out_features}{RNG})", "{self}({x})", "torch")
    if name in ("Conv1d", "Conv2d", "ConvTranspose2d"):
        if isinstance(m.padding, str) or m.padding_mode != "zeros":
            refuse(f"padding={m.padding!r}, padding_mode={m.padding_mode!r}", "give the padding as numbers")
        fn = {"Conv1d": "conv1d", "Conv2d": "conv2d", "ConvTranspose2d": "conv_transpose2d"}[name]
        defaults = dict(stride=1, padding=0, dilation=1, **({"output_padding": 0} if "Transpose" in name else {}))
        # stride and padding always: blocks that differ in them then share a class (classes.py)
        kw = {k: _one(getattr(m, k)) for k, d in defaults.items() if _one(getattr(m, k)) != d or k in ("stride",
                                                                                                     "padding")}
        kw.update({"groups": m.groups} if m.groups != 1 else {})
        kw.update({"bias": False} if m.bias is None else {})
        return Leaf(f"jnn.{fn}({m.in_channels}, {m.out_channels}, {_one(m.kernel_size)!r}{_kw(**kw)}{RNG})",
                    "{self}({x})", "cl")
    if name in ("BatchNorm1d", "BatchNorm2d"):
        if m.momentum is None or not m.affine or not m.track_running_stats:
            refuse("momentum=None, affine=False or track_running_stats=False",
                   "write the normalisation by hand (TorchBatchNorm has torch's default slots)")
        return Leaf(f"jnn.TorchBatchNorm({m.num_features}{_kw(momentum=m.momentum, eps=m.eps)}{RNG})", "{self}({x})",
                    "cl")
    if name == "LayerNorm":
        if len(m.normalized_shape) != 1:
            refuse(f"normalized_shape={tuple(m.normalized_shape)}", "normalise over the last axis only, or by hand")
        kw = dict(eps=m.eps) if m.eps != 1e-5 else {}
        kw.update({"elementwise_affine": False} if not m.elementwise_affine else {})
        kw.update({"bias": False} if m.elementwise_affine and m.bias is None else {})
        return Leaf(f"jnn.LayerNorm({m.normalized_shape[0]}{_kw(**kw)}{RNG})", "{self}({x})", "torch")
    if name == "GroupNorm":
        return Leaf(f"jnn.GroupNorm({m.num_groups}, {m.num_channels}{_kw(eps=m.eps, affine=m.affine)}{RNG})",
                    "{self}({x})", "cl")
    if name == "Embedding":
        if m.max_norm is not None or m.scale_grad_by_freq or m.sparse:
            refuse("max_norm, scale_grad_by_freq or sparse", "jaxport.nn.Embedding supports none of them")
        kw = {"padding_idx": m.padding_idx} if m.padding_idx is not None else {}
        return Leaf(f"jnn.Embedding({m.num_embeddings}, {m.embedding_dim}{_kw(**kw)}{RNG})", "{self}({x})", "torch")
    if name in ("LSTM", "GRU"):
        if getattr(m, "proj_size", 0) or not m.bias:
            refuse("proj_size or bias=False", f"jaxport.nn.{name} has neither; write the cell by hand")
        kw = {k: getattr(m, k) for k in ("num_layers", "batch_first", "bidirectional")
              if getattr(m, k) != {"num_layers": 1}.get(k, False)}
        # dropout between layers: check_port switches torch's off, and jaxport.nn refuses it
        return Leaf(f"jnn.{name}({m.input_size}, {m.hidden_size}{_kw(**kw)}{RNG})", "{self}({args})", "torch")
    if name == "MultiheadAttention":
        if not m._qkv_same_embed_dim or m.bias_k is not None:
            refuse("kdim/vdim or add_bias_kv", "jaxport.nn.MultiheadAttention packs q, k, v of one size")
        kw = {k: v for k, v in dict(bias=m.in_proj_bias is not None, batch_first=m.batch_first).items()
              if v != (k == "bias")}
        return Leaf(f"jnn.MultiheadAttention({m.embed_dim}, {m.num_heads}{_kw(**kw)}{RNG})", "{self}({args})", "torch")
    if name == "Dropout":
        # check_port runs both sides with dropout off (torch's eval(), NNX's deterministic)
        return Leaf(f"nnx.Dropout({m.p}, rngs=rngs)", "{self}({x})", "any")
    if name == "SharedDropout":         # torchref's hash-mask dropout: one mask on both sides
        return Leaf(f"jnn.SharedDropout({m.p})", "{self}({x})", "torch")
    return _stateless(m, name, where)


def _stateless(m, name, where) -> Leaf:
    simple = {"ReLU": "jax.nn.relu", "Sigmoid": "jax.nn.sigmoid", "Tanh": "jnp.tanh", "SiLU": "jax.nn.silu"}
    if name in simple:
        return Leaf(None, simple[name] + "({x})", "any", simple[name])
    if name == "Identity":
        return Leaf(None, "{x}", "any", "lambda x: x")
    if name == "LeakyReLU":
        return Leaf(None, f"jnn.leaky_relu({{x}}, {m.negative_slope!r})", "any", "jnn.leaky_relu")
    if name == "GELU":
        return Leaf(None, f"jnn.gelu({{x}}, approximate={m.approximate!r})", "any", "jnn.gelu")
    if name in ("Softmax", "LogSoftmax"):
        fn = "jax.nn.softmax" if name == "Softmax" else "jax.nn.log_softmax"
        if m.dim is None:
            raise Untranslatable(f"nn.{name}() without dim", where, f"give nn.{name} its dim")
        return Leaf(None, f"jnn.{fn}({{x}}, axis={m.dim})", "torch", fn)
    if name == "Flatten":
        return Leaf(None, f"torchops.flatten({{x}}, {m.start_dim}, {m.end_dim})", "torch", "torchops.flatten")
    if name == "MaxPool2d":
        if _one(m.dilation) != 1 or m.ceil_mode or m.return_indices:
            raise Untranslatable("nn.MaxPool2d with dilation, ceil_mode or return_indices", where,
                                 "jaxport.nn.max_pool2d has none of them; write the pool by hand")
        return Leaf(None, f"jnn.max_pool2d({{x}}, {_one(m.kernel_size)!r}, {_one(m.stride)!r}, {_one(m.padding)!r})",
                    "cl", "jnn.max_pool2d")
    if name == "AdaptiveAvgPool2d":
        return Leaf(None, f"torchops.adaptive_avg_pool2d({{x}}, {m.output_size!r})", "cl",
                    "torchops.adaptive_avg_pool2d")
    raise Untranslatable(f"torch module nn.{name}", where,
                         f"no translation for nn.{name}; write its NNX layer by hand (and a layer kind or "
                         "check_port's convert= for its weights)")


# Which torch classes are leaves, for the docs' table (the names leaf() handles).
CLASSES = ("Linear", "Conv1d", "Conv2d", "ConvTranspose2d", "BatchNorm1d", "BatchNorm2d", "LayerNorm",
           "GroupNorm", "Embedding", "LSTM", "GRU", "MultiheadAttention", "Dropout", "ReLU", "Sigmoid", "Tanh",
           "SiLU", "LeakyReLU", "GELU", "Identity", "Softmax", "LogSoftmax", "Flatten", "MaxPool2d", "AdaptiveAvgPool2d")


def is_leaf(m) -> bool:
    """A torch class of its own with a row here (SharedDropout, torchref's, included);
    a class of the user's own is traced into a class of the generated file."""
    name = type(m).__name__
    own = type(m).__module__.startswith("torch.nn.") or name == "SharedDropout"
    return own and (name in CLASSES or name == "SharedDropout" or not isinstance(m, (nn.Sequential,
                                                                                      nn.ModuleList,
                                                                                      nn.ModuleDict)))
