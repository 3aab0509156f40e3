"""The whole generated file: one NNX class per torch class (children before parents),
`make_model()`, and the imports the code uses.

Instances of one torch class that translate to the same code share one class; where
they differ (a ResNet's blocks of other widths) the later ones are numbered
(BasicBlock_2): the constructor's arguments are not recoverable from the instance.
"""
from __future__ import annotations

import re

import torch
import torch.nn as nn

from jaxport.translate.emit import ClassWriter
from jaxport.translate.leaves import is_leaf, leaf
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


class FileWriter:
    def __init__(self, model, example_inputs, example_kwargs=None):
        self.model, self.inputs = model, record_inputs(model, example_inputs, example_kwargs)
        self.class_of, self.classes, self.bodies = {}, [], {}

    def ctor(self, m, path: str, in_container: bool) -> str | None:
        if isinstance(m, nn.ModuleList):
            return f"nnx.List([{', '.join(self.ctor(c, f'{path}.{i}', True) for i, c in enumerate(m))}])"
        if isinstance(m, nn.ModuleDict):
            items = "".join(f"\n    {k!r}: {self.ctor(c, f'{path}.{k}', True)}," for k, c in m.items())
            return "nnx.Dict({" + items + "\n})"
        if not is_leaf(m):
            return f"{self.class_of[id(m)]}(rngs=rngs, dtype=dtype)"
        lf = leaf(m, f"{path} ({type(m).__name__})")
        return lf.ctor if lf.ctor else (lf.item if in_container else None)

    def init_lines(self, m, path: str) -> list[str]:
        body = []
        if isinstance(m, nn.Sequential):
            items = [self.ctor(c, f"{path}.{i}".lstrip("."), True) for i, c in m._modules.items()]
            body += ["super().__init__("] + [f"    {item}," for item in items] + [")"]
        else:
            for n, c in m._modules.items():
                code = "None" if c is None else self.ctor(c, f"{path}.{n}".lstrip("."), False)
                if code is not None:
                    body += f"self.{n} = {code}".split("\n")
        for n, p in m._parameters.items():
            if p is not None:
                body.append(f"self.{n} = nnx.Param({_param_init(n, p)})")
        for n, b in m._buffers.items():
            if b is not None and n not in m._non_persistent_buffers_set:
                body.append(f"self.{n} = nnx.BatchStat({_param_init(n, b)})   # a buffer: state, not trained")
        return ["def __init__(self, *, rngs: nnx.Rngs, dtype=jnp.float32):"] + ["    " + b for b in body or ["pass"]]

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
        body = tuple(self.init_lines(m, path) + [""] + ClassWriter(traced, self.class_of).call_lines())
        if body not in self.bodies:
            base = type(m).__name__
            taken = sum(1 for c in self.classes if re.fullmatch(rf"{base}(_\d+)?", c[0]))
            self.bodies[body] = base if not taken else f"{base}_{taken + 1}"
            parent = "nnx.Sequential" if isinstance(m, nn.Sequential) else "nnx.Module"
            self.classes.append((self.bodies[body], parent, body))
        self.class_of[id(m)] = self.bodies[body]

    def source(self, source_name: str) -> str:
        if is_leaf(self.model):
            raise Untranslatable(f"a bare torch layer ({type(self.model).__name__})", source_name,
                                 "wrap it in a module of your own")
        self.visit(self.model, "")
        blocks = []
        for name, parent, body in self.classes:
            blocks.append(f"class {name}({parent}):\n" + "\n".join(("    " + ln) if ln else "" for ln in body))
        root = self.class_of[id(self.model)]
        blocks.append(f'def make_model(seed: int = 0, dtype=jnp.float32) -> {root}:\n'
                      f'    """The NNX twin with fresh weights (torch\'s init distributions)."""\n'
                      f'    return {root}(rngs=nnx.Rngs(seed), dtype=dtype)')
        code = "\n\n\n".join(blocks) + "\n"
        used = [imp for imp, prefix in IMPORTS if not prefix or prefix in code]
        imports = "\n".join(used).strip() + "\n"
        header = HEADER.format(torch_class=type(self.model).__name__, source=source_name)
        return header + "\n" + imports + "\n\n" + code
