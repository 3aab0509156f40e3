"""The whole generated file: one NNX class per torch class (children before parents),
`make_model()`, and the imports the code uses.

Instances of one torch class share one class, with what they differ in (widths,
strides, an optional child) as its `__init__` arguments (classes.py, render.py); a
Sequential of the file's own classes is an nnx.Sequential built inline, as torch's
`nn.Sequential(Block(...), Block(...))`.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from jaxport.translate.classes import CHILD, Inst, Unmerged, assign_labels
from jaxport.translate.emit import ClassWriter
from jaxport.translate.leaves import is_leaf, leaf
from jaxport.translate.render import Renderer
from jaxport.translate.trace import Untranslatable, record_inputs, trace

HEADER = '''"""Flax NNX twin of {torch_class}, written by `jaxport.translate` from a torch.fx trace
of {source}. The classes keep torch's names and attribute paths, so
`parity_tests.harness.check_port(torch_model, make_model(), x, y)` loads torch's weights
with no name_map and no convert. Inputs and outputs are in torch's layouts (NCHW);
convolutions run channels last inside. Each line's comment is the torch source it
comes from."""
'''
IMPORTS = [("import jax", "jax."), ("import jax.numpy as jnp", "jnp."), ("from flax import nnx", "nnx."),
           ("", ""), ("from jaxport import nn as jnn", "jnn."), ("from jaxport.translate import torchops", "torchops.")]


def _param_init(name: str, t: torch.Tensor) -> str:
    """A bare parameter's fresh value: torch's ones or zeros where it holds them, else
    N(0, std) at its current spread (check_port copies torch's values in anyway)."""
    shape = tuple(t.shape)
    if bool((t == 1).all()):
        return f"jnp.ones({shape}, dtype)"
    if bool((t == 0).all()):
        return f"jnp.zeros({shape}, dtype)"
    std = float(t.detach().double().std()) if t.numel() > 1 else 1.0
    return f"{std:.3g} * jax.random.normal(rngs.params(), {shape}, dtype)"


def _chain(graph) -> bool:
    """A Sequential that nnx.Sequential runs alike: each item called on the one before's
    tensor output, nothing else."""
    nodes = list(graph.nodes)
    calls = [n for n in nodes if n.op == "call_module"]
    if [n.op for n in nodes] != ["placeholder"] + ["call_module"] * len(calls) + ["output"]:
        return False
    prev = nodes[0]
    for n in calls:
        if n.args != (prev,) or n.kwargs or not isinstance(n.meta.get("val"), torch.Tensor):
            return False
        prev = n
    return nodes[-1].args[0] is prev


class FileWriter:
    def __init__(self, model, example_inputs, example_kwargs=None):
        self.model, self.inputs = model, record_inputs(model, example_inputs, example_kwargs)
        self.insts: dict[int, Inst] = {}              # post-order: children first

    def ctor(self, m, path: str, in_container: bool) -> str | None:
        if isinstance(m, nn.ModuleList):
            return f"nnx.List([{', '.join(self.ctor(c, f'{path}.{i}', True) for i, c in enumerate(m))}])"
        if isinstance(m, nn.ModuleDict):
            items = "".join(f"\n    {k!r}: {self.ctor(c, f'{path}.{k}', True)}," for k, c in m.items())
            return "nnx.Dict({" + items + "\n})"
        if not is_leaf(m):
            return f"__child_{id(m)}__"                   # its class and arguments: render.py
        lf = leaf(m, f"{path} ({type(m).__name__})")
        return lf.ctor if lf.ctor else (lf.item if in_container else None)

    def init_lines(self, m, path: str) -> list[str]:
        """__init__'s statements (one string each, some of several rows)."""
        body = []
        if isinstance(m, nn.Sequential):
            items = [self.ctor(c, f"{path}.{i}".lstrip("."), True) for i, c in m._modules.items()]
            body.append("\n".join(["super().__init__("] + [f"    {item}," for item in items] + [")"]))
        else:
            for n, c in m._modules.items():
                code = "None" if c is None else self.ctor(c, f"{path}.{n}".lstrip("."), False)
                if code is not None:
                    body.append(f"self.{n} = {code}")
        for n, p in m._parameters.items():
            if p is not None:
                body.append(f"self.{n} = nnx.Param({_param_init(n, p)})")
        for n, b in m._buffers.items():
            if b is not None and n not in m._non_persistent_buffers_set:
                body.append(f"self.{n} = nnx.BatchStat({_param_init(n, b)})   # a buffer: state, not trained")
        return body

    def visit(self, m, path: str):
        """Post-order: the children's classes exist before the parent's is written."""
        for n, c in m._modules.items():
            if c is not None and not is_leaf(c):
                self.visit(c, f"{path}.{n}".lstrip("."))
        if isinstance(m, (nn.ModuleList, nn.ModuleDict)):
            return
        if id(m) not in self.inputs:
            raise Untranslatable(f"module {path or 'the root'} ({type(m).__name__})", "its forward",
                                 "it is never called on the example inputs; call it, or remove it")
        traced = trace(m, *self.inputs[id(m)])
        init = self.init_lines(m, path)
        children = [int(k) for s in init for k in CHILD.findall(s)]
        inline = isinstance(m, nn.Sequential) and len(children) == len(m) > 0 and _chain(traced.graph)
        self.insts[id(m)] = Inst(m, init, ClassWriter(traced, None).call_lines(), inline, children)

    def source(self, source_name: str) -> str:
        if is_leaf(self.model):
            raise Untranslatable(f"a bare torch layer ({type(self.model).__name__})", source_name,
                                 "wrap it in a module of your own")
        self.visit(self.model, "")
        if self.insts[id(self.model)].inline:
            self.insts[id(self.model)].inline = False      # the root is a class of the file
        keep_apart: set[str] = set()
        while True:                 # a type whose variants will not merge after all: numbered classes
            assign_labels(self.insts, frozenset(keep_apart))
            r = Renderer(self.insts)
            try:
                root = r.ctor(id(self.model), rngs="nnx.Rngs(seed)")
                break
            except Unmerged as error:
                if error.type_name in keep_apart:
                    raise
                keep_apart.add(error.type_name)
        blocks = ["\n".join(c.rows) for c in r.order]
        root_class = r.finish(self.insts[id(self.model)].label).name
        blocks.append(f'def make_model(seed: int = 0, dtype=jnp.float32) -> {root_class}:\n'
                      f'    """The NNX twin with fresh weights (torch\'s init distributions)."""\n'
                      f'    return {root}')
        code = "\n\n\n".join(blocks) + "\n"
        used = [imp for imp, prefix in IMPORTS if not prefix or prefix in code]
        imports = "\n".join(used).strip() + "\n"
        header = HEADER.format(torch_class=type(self.model).__name__, source=source_name)
        return header + "\n" + imports + "\n\n" + code
