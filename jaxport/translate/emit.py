"""One traced torch module -> the body of its NNX class: __init__ (the children at the
same attribute paths) and __call__ (the fx graph, node by node, one line each, with
torch's source line beside it).

Layouts: every generated class takes and returns torch's layouts, so classes compose
as torch's modules do. Inside, a map leaves a conv, pool or BatchNorm channels last
and stays so through elementwise ops; it is moved back to channels first only where
the order of axes matters (ops.py's "torch" rows: a flatten, a view, a Linear). XLA
folds a move that is undone at once, so the boundaries cost nothing at run time.
"""
from __future__ import annotations

import keyword
import math
import operator

import torch
import torch.fx as fx
import torch.nn as nn

from jaxport.translate import ops
from jaxport.translate.leaves import is_leaf, leaf
from jaxport.translate.trace import Traced, Untranslatable

RESERVED = {"jax", "jnp", "nnx", "jnn", "torchops", "math", "self", "rngs", "dtype", "make_model"}
_DTYPES = {torch.float32: "jnp.float32", torch.float64: "jnp.float64", torch.float16: "jnp.float16",
           torch.bfloat16: "jnp.bfloat16", torch.int64: "jnp.int32", torch.int32: "jnp.int32",
           torch.bool: "jnp.bool_"}   # int64 indices: int32 is all jax has without x64


def literal(v) -> str:
    if isinstance(v, torch.dtype) and v in _DTYPES:
        return _DTYPES[v]
    if isinstance(v, torch.device):
        return "None"                                    # jax places arrays itself
    if v is Ellipsis:
        return "..."
    if isinstance(v, float) and not math.isfinite(v):
        return f'float("{v}")'
    if isinstance(v, torch.Size):
        return repr(tuple(v))
    if v is None or isinstance(v, (bool, int, float, str)):
        return repr(v)
    raise TypeError(type(v).__name__)


def child_code(root, target: str) -> str:
    """'transformer.h.0' -> 'self.transformer.h[0]'; a Sequential's '0' -> 'self.layers[0]'."""
    code, m = "self", root
    for seg in target.split("."):
        if isinstance(m, nn.Sequential):
            code += f".layers[{seg}]"
        elif isinstance(m, nn.ModuleList):
            code += f"[{seg}]"
        elif isinstance(m, nn.ModuleDict) and not seg.isidentifier():
            code += f"[{seg!r}]"
        else:
            code += f".{seg}"
        m = m._modules[seg] if seg in m._modules else getattr(m, seg)
    return code


class ClassWriter:
    def __init__(self, traced: Traced, class_name_of):
        self.m, self.graph, self.class_name_of = traced.module, traced.graph, class_name_of
        self.names, self.layout, self.moved = {}, {}, {}
        self.lines: list[str] = []
        self._last_comment = None

    # ---- values -----------------------------------------------------------------------
    def name(self, node) -> str:
        if node not in self.names:
            base = node.name if node.op != "placeholder" else node.target.lstrip("*")
            if base in RESERVED or keyword.iskeyword(base):
                base += "_"
            self.names[node] = base
        return self.names[node]

    @staticmethod
    def val(node):
        return node.meta.get("val")

    def is_map(self, node) -> bool:
        v = self.val(node)
        return isinstance(node, fx.Node) and isinstance(v, torch.Tensor) and v.ndim >= 3

    def src(self, node, want=None) -> str:
        """The node's variable, moved to layout `want` ("torch", "cl") where it is a map."""
        have = self.layout.get(node, "torch")
        if want is None or want == have or not self.is_map(node):
            return self.name(node)
        key = (node, want)
        if key not in self.moved:
            moved = f"{self.name(node)}_{'cl' if want == 'cl' else 'nc'}"
            fn = "channels_last" if want == "cl" else "channels_first"
            self.lines.append(f"{moved} = torchops.{fn}({self.name(node)})")
            self.moved[key] = moved
        return self.moved[key]

    def render(self, a, want="torch", index=False) -> str:
        if isinstance(a, fx.Node):
            return self.src(a, want)
        if isinstance(a, slice) and index:
            parts = [("" if p is None else self.render(p, want)) for p in (a.start, a.stop, a.step)]
            return ":".join(parts[:2]) + (f":{parts[2]}" if parts[2] else "")
        if isinstance(a, slice):
            return f"slice({', '.join(self.render(p, want) for p in (a.start, a.stop, a.step))})"
        if isinstance(a, (tuple, list)) and not isinstance(a, torch.Size):
            inner = ", ".join(self.render(x, want, index) for x in a)
            if index and isinstance(a, tuple):
                return inner
            return f"[{inner}]" if isinstance(a, list) else f"({inner}{',' if len(a) == 1 else ''})"
        try:
            return literal(a)
        except TypeError:
            raise Untranslatable(f"a {type(a).__name__} argument", self.where, "pass numbers, tensors or "
                                 "tuples of them, or write this line by hand") from None

    # ---- emitting -----------------------------------------------------------------------
    def emit(self, node, code: str, layout: str = "torch"):
        out = self.val(node)
        self.layout[node] = layout if isinstance(out, torch.Tensor) and out.ndim >= 3 else "torch"
        torch_src = node.meta.get("line", "?").split(": ", 1)[-1]
        comment = f"  # {torch_src}" if torch_src not in (self._last_comment, "?") else ""
        self._last_comment = torch_src
        self.lines.append(f"{self.name(node)} = {code}{comment}")

    def elementwise_layout(self, args) -> str | None:
        """'cl' when every map argument is channels last (same rank), else None (torch)."""
        flat = []
        fx.node.map_arg(args, flat.append)
        maps = [n for n in flat if isinstance(self.val(n), torch.Tensor) and self.val(n).ndim >= 1]
        if maps and all(self.layout.get(n) == "cl" and self.val(n).ndim == self.val(maps[0]).ndim for n in maps):
            return "cl"
        return None

    def call_lines(self) -> list[str]:
        params = []
        for node in self.graph.nodes:
            self.where = node.meta.get("line", "?")
            if node.op == "placeholder":
                default = f"={literal(node.args[0])}" if node.args else ""
                params.append(self.name(node) + default)
            elif node.op == "get_attr":
                self.get_attr(node)
            elif node.op == "call_module":
                self.call_module(node)
            elif node.op in ("call_function", "call_method"):
                self.call_op(node)
            elif node.op == "output":
                self.lines.append(f"return {self.render(node.args[0], 'torch')}")
        return [f"def __call__(self, {', '.join(params)}):"] + ["    " + ln for ln in self.lines]

    def get_attr(self, node):
        owner, _, attr = node.target.rpartition(".")
        holder = self.m.get_submodule(owner) if owner else self.m
        if attr not in holder._parameters and attr not in holder._buffers or (owner and is_leaf(holder)):
            raise Untranslatable(f"the tensor {node.target}", self.where, "read a layer's weight through "
                                 "the layer (NNX names it differently), or hold it as an nn.Parameter of your own")
        self.emit(node, child_code(self.m, node.target) + "[...]")

    def call_module(self, node):
        sub = self.m.get_submodule(node.target)
        code = child_code(self.m, node.target)
        if not is_leaf(sub):
            args = ", ".join([self.render(a) for a in node.args] +
                             [f"{k}={self.render(v)}" for k, v in node.kwargs.items()])
            return self.emit(node, f"{code}({args})")
        lf = leaf(sub, self.where)
        want = {"cl": "cl", "torch": "torch"}.get(lf.layout) or ("cl" if self.elementwise_layout(node.args) else None)
        if "{args}" in lf.call:                       # several inputs (an LSTM's state): torch's layouts
            x, allargs = "", ", ".join([self.render(a) for a in node.args] +
                                       [f"{k}={self.render(v)}" for k, v in node.kwargs.items()])
        else:
            x, allargs = self.render(node.args[0], want), ""
        out = "cl" if want == "cl" else "torch"
        self.emit(node, lf.call.format(self=code, x=x, args=allargs), out)

    def call_op(self, node):
        t = node.target
        if t is operator.getitem:
            base, idx = node.args
            return self.emit(node, f"{self.render(base)}[{self.render(idx, index=True)}]")
        if t is getattr:
            return self.get_attribute(node)
        op = ops.METHODS.get(t) if node.op == "call_method" else ops.FUNCTIONS.get(t)
        if op is None:
            what = f"Tensor.{t}" if node.op == "call_method" else f"{getattr(t, '__module__', '')}.{getattr(t, '__name__', t)}"
            raise Untranslatable(f"the function {what}", self.where, "no translation for it: write this line in "
                                 "JAX by hand in the generated file (docs/translate.md lists what translates)")
        want = {"cl": "cl", "torch": "torch"}.get(op.layout) or ("cl" if self.elementwise_layout(
            (node.args, node.kwargs)) else "torch")
        bound = self.bind(op, node, want)
        for (name, p), allowed in ops.ONLY.items():
            if name == op.name and bound[p] not in allowed:
                raise Untranslatable(f"{op.name.split(',')[0]} with {p}={bound[p]}", self.where,
                                     f"only {' or '.join(allowed)} translates; write it by hand")
        if op.name.startswith("F.dropout") and bound["training"] != "False" and bound["p"] not in ("0", "0.0"):
            raise Untranslatable("F.dropout in training mode", self.where, "use an nn.Dropout module (check_port "
                                 "switches it off on both sides) or write a shared mask by hand")
        self.emit(node, op.template.format(**bound), "cl" if want == "cl" else "torch")

    def get_attribute(self, node):
        base, attr = node.args
        if attr == "device":
            return self.emit(node, "None")
        if attr in ("shape", "dtype", "T", "ndim"):
            return self.emit(node, f"{self.render(base)}.{attr}")
        raise Untranslatable(f"the tensor attribute .{attr}", self.where, "write this line by hand")

    def bind(self, op, node, want) -> dict:
        args, kwargs, out = list(node.args), dict(node.kwargs), {}
        for i, (name, default) in enumerate(op.params):
            if name.startswith("*"):
                rest, args = args, []
                one = len(rest) == 1 and (isinstance(rest[0], (tuple, list)) or
                                          isinstance(self.val(rest[0]) if isinstance(rest[0], fx.Node) else None,
                                                     (tuple, list, torch.Size)))
                out[name[1:]] = self.render(rest[0] if one else tuple(rest), want)
                continue
            if args:
                out[name] = self.render(args.pop(0), want)
            elif name in kwargs:
                out[name] = self.render(kwargs.pop(name), want)
            elif default is ops.REQUIRED:
                raise Untranslatable(f"{op.name.split(',')[0]} without {name}", self.where, f"pass {name}")
            else:
                out[name] = default
        if args or kwargs:
            extra = ", ".join([f"{len(args)} more positional"] * bool(args) + list(kwargs))
            raise Untranslatable(f"{op.name.split(',')[0]} with {extra}", self.where, "write this line by hand")
        return out
