"""The table of torch functions and tensor methods the translator writes, each with
torch's signature (so `dim` may come by position or keyword and becomes `axis`), the
JAX it becomes, and how it treats channels-last maps:

- "any": elementwise, runs on a map in whichever layout it is;
- "torch": the order of axes matters (a view, a softmax over dim 1): its tensor
  arguments are moved back to torch's channels-first layout first;
- "cl": runs channels last (pooling): its input is moved there first.

docs/translate.md's table lists these rows; parity_tests/tests/test_translate_table.py
walks it against this module.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

REQUIRED = object()


@dataclass(frozen=True)
class Op:
    name: str                 # how docs/translate.md names it: F.softmax, Tensor.view, a + b
    params: tuple             # torch's parameters: (name, default source or REQUIRED); "*name" collects
    template: str             # the JAX source, str.format'ed with the parameters' source
    layout: str               # "any", "torch" or "cl"


def _params(text: str) -> tuple:
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, eq, default = part.partition("=")
        out.append((name.strip(), default.strip() if eq else REQUIRED))
    return tuple(out)


FUNCTIONS: dict = {}           # the torch callable -> Op
METHODS: dict = {}             # "view" -> Op (Tensor.view)
ALL: list = []                 # every Op, in the docs' order


def _add(targets, name, params, template, layout):
    op = Op(name, _params(params), template, layout)
    ALL.append(op)
    for t in targets:
        if isinstance(t, str):
            METHODS[t] = op
        else:
            FUNCTIONS[t] = op


# ---- elementwise: any layout ----------------------------------------------------------
_add([F.relu, torch.relu, "relu"], "F.relu, torch.relu, Tensor.relu", "input, inplace=False",
     "jax.nn.relu({input})", "any")
_add([torch.sigmoid, F.sigmoid, "sigmoid"], "torch.sigmoid, F.sigmoid, Tensor.sigmoid", "input",
     "jax.nn.sigmoid({input})", "any")
_add([torch.tanh, F.tanh, "tanh"], "torch.tanh, F.tanh, Tensor.tanh", "input", "jnp.tanh({input})", "any")
# exact (erf) GELU unless torch asks for tanh: jax.nn.gelu's own default is the tanh form
_add([F.gelu], "F.gelu", "input, approximate='none'", "jnn.gelu({input}, approximate={approximate})", "any")
_add([F.silu], "F.silu", "input, inplace=False", "jax.nn.silu({input})", "any")
_add([F.leaky_relu], "F.leaky_relu", "input, negative_slope=0.01, inplace=False",
     "jnn.leaky_relu({input}, {negative_slope})", "any")
_add([torch.exp, "exp"], "torch.exp, Tensor.exp", "input", "jnp.exp({input})", "any")
_add([torch.log, "log"], "torch.log, Tensor.log", "input", "jnp.log({input})", "any")
_add([torch.sqrt, "sqrt"], "torch.sqrt, Tensor.sqrt", "input", "jnp.sqrt({input})", "any")
_add(["pow", torch.pow], "Tensor.pow, torch.pow", "input, exponent", "{input} ** {exponent}", "any")
_add(["contiguous"], "Tensor.contiguous", "input, memory_format=None", "{input}", "any")
_add(["to"], "Tensor.to (a dtype)", "input, dtype", "{input}.astype({dtype})", "any")
_add(["float"], "Tensor.float", "input", "{input}.astype(jnp.float32)", "any")
_add([torch.where], "torch.where", "condition, input, other", "jnp.where({condition}, {input}, {other})", "any")
for _fn, _sym in ((operator.add, "+"), (operator.sub, "-"), (operator.mul, "*"), (operator.truediv, "/"),
                  (operator.floordiv, "//"), (operator.pow, "**"), (operator.eq, "=="), (operator.ne, "!="),
                  (operator.lt, "<"), (operator.gt, ">"), (operator.le, "<="), (operator.ge, ">="),
                  (operator.and_, "&"), (operator.or_, "|"), (operator.iadd, "+"), (operator.imul, "*")):
    _add([_fn], f"a {_sym} b" + (" (in place)" if _fn in (operator.iadd, operator.imul) else ""), "a, b",
         f"{{a}} {_sym} {{b}}", "any")
_add([operator.neg], "-a", "a", "-{a}", "any")
_add([torch.add, "add"], "torch.add, Tensor.add", "input, other, alpha=1", "{input} + {other}", "any")
_add([torch.mul, "mul"], "torch.mul, Tensor.mul", "input, other", "{input} * {other}", "any")

# ---- the order of axes matters: torch's layout -------------------------------------------
_add(["view", "reshape", torch.reshape], "Tensor.view, Tensor.reshape, torch.reshape", "input, *shape",
     "jnp.reshape({input}, {shape})", "torch")
_add([torch.flatten, "flatten"], "torch.flatten, Tensor.flatten", "input, start_dim=0, end_dim=-1",
     "torchops.flatten({input}, {start_dim}, {end_dim})", "torch")
_add(["permute", torch.permute], "Tensor.permute, torch.permute", "input, *dims",
     "jnp.transpose({input}, {dims})", "torch")
_add(["transpose", torch.transpose], "Tensor.transpose, torch.transpose", "input, dim0, dim1",
     "jnp.swapaxes({input}, {dim0}, {dim1})", "torch")
_add(["t"], "Tensor.t", "input", "{input}.T", "torch")
_add(["size"], "Tensor.size", "input, dim=None", "torchops.size({input}, {dim})", "torch")
_add(["unsqueeze", torch.unsqueeze], "Tensor.unsqueeze, torch.unsqueeze", "input, dim",
     "jnp.expand_dims({input}, {dim})", "torch")
_add(["squeeze", torch.squeeze], "Tensor.squeeze, torch.squeeze", "input, dim=None",
     "torchops.squeeze({input}, {dim})", "torch")
_add([F.softmax, torch.softmax, "softmax"], "F.softmax, torch.softmax, Tensor.softmax",
     "input, dim, _stacklevel=3, dtype=None", "jax.nn.softmax({input}, axis={dim})", "torch")
_add([F.log_softmax, torch.log_softmax, "log_softmax"], "F.log_softmax, torch.log_softmax, Tensor.log_softmax",
     "input, dim, _stacklevel=3, dtype=None", "jax.nn.log_softmax({input}, axis={dim})", "torch")
_add([torch.matmul, operator.matmul, "matmul", torch.bmm], "torch.matmul, a @ b, Tensor.matmul, torch.bmm",
     "input, other", "{input} @ {other}", "torch")
_add([torch.cat, torch.concat], "torch.cat", "tensors, dim=0", "jnp.concatenate({tensors}, axis={dim})", "torch")
_add([torch.stack], "torch.stack", "tensors, dim=0", "jnp.stack({tensors}, axis={dim})", "torch")
_add(["split", torch.split], "Tensor.split, torch.split", "input, split_size_or_sections, dim=0",
     "torchops.split({input}, {split_size_or_sections}, axis={dim})", "torch")
_add(["chunk", torch.chunk], "Tensor.chunk, torch.chunk", "input, chunks, dim=0",
     "torchops.chunk({input}, {chunks}, axis={dim})", "torch")
_add(["sum", torch.sum], "Tensor.sum, torch.sum", "input, dim=None, keepdim=False, dtype=None",
     "jnp.sum({input}, axis={dim}, keepdims={keepdim})", "torch")
_add(["mean", torch.mean], "Tensor.mean, torch.mean", "input, dim=None, keepdim=False, dtype=None",
     "jnp.mean({input}, axis={dim}, keepdims={keepdim})", "torch")
_add(["masked_fill"], "Tensor.masked_fill", "input, mask, value",
     "torchops.masked_fill({input}, {mask}, {value})", "torch")
_add([torch.tril, "tril"], "torch.tril, Tensor.tril", "input, diagonal=0", "jnp.tril({input}, {diagonal})",
     "torch")
_add([torch.arange], "torch.arange", "start, end=None, step=1, dtype=None, device=None, layout=None, "
     "requires_grad=False", "jnp.arange({start}, {end}, {step}, dtype={dtype})", "torch")
_add([torch.ones], "torch.ones", "*size, dtype=None, device=None, requires_grad=False",
     "jnp.ones({size}, dtype={dtype})", "torch")
_add([torch.zeros], "torch.zeros", "*size, dtype=None, device=None, requires_grad=False",
     "jnp.zeros({size}, dtype={dtype})", "torch")
_add([F.scaled_dot_product_attention], "F.scaled_dot_product_attention",
     "query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False",
     "torchops.scaled_dot_product_attention({query}, {key}, {value}, attn_mask={attn_mask}, "
     "dropout_p={dropout_p}, is_causal={is_causal}, scale={scale})", "torch")
_add([F.layer_norm], "F.layer_norm", "input, normalized_shape, weight=None, bias=None, eps=1e-05",
     "torchops.layer_norm({input}, {normalized_shape}, {weight}, {bias}, {eps})", "torch")
_add([F.dropout], "F.dropout (training=False or p=0)", "input, p=0.5, training=True, inplace=False",
     "{input}", "any")

# ---- channels last --------------------------------------------------------------------------
_add([F.max_pool2d], "F.max_pool2d", "input, kernel_size, stride=None, padding=0, dilation=1, "
     "ceil_mode=False, return_indices=False", "jnn.max_pool2d({input}, {kernel_size}, {stride}, {padding})", "cl")
_add([F.avg_pool2d], "F.avg_pool2d (no padding)", "input, kernel_size, stride=None",
     "torchops.avg_pool2d({input}, {kernel_size}, {stride})", "cl")
_add([F.adaptive_avg_pool2d], "F.adaptive_avg_pool2d (dividing sizes)", "input, output_size",
     "torchops.adaptive_avg_pool2d({input}, {output_size})", "cl")

# Values the template cannot take: (op name, parameter) -> the only sources it accepts.
ONLY = {("F.max_pool2d", "dilation"): ("1", "(1, 1)"), ("F.max_pool2d", "ceil_mode"): ("False",),
        ("F.max_pool2d", "return_indices"): ("False",), ("torch.add, Tensor.add", "alpha"): ("1",)}
