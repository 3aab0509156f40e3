"""Tracing a torch model one module class at a time with torch.fx.

Each module of the user's own (and each nn.Sequential) is traced on its own, with every
submodule a leaf: the generated NNX class then calls its children at the same
attribute paths, so check_port's structure matching needs no name_map. Every node is
also run once on the example inputs (each module's own inputs, recorded by forward
pre-hooks on the whole model) so the emitter knows which values are tensors, their
ranks and dtypes, and which are plain Python numbers.
"""
from __future__ import annotations

import linecache
import os
import traceback
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.fx as fx

_SKIP = (os.path.dirname(torch.__file__), os.path.dirname(os.path.abspath(__file__)),
         os.path.dirname(fx.__file__))


class Untranslatable(Exception):
    """What the translator cannot write: `what` (a module, function or control flow),
    `where` (file:line and the source line) and `advice` (what to write by hand)."""

    def __init__(self, what: str, where: str, advice: str):
        super().__init__(f"{what} at {where}: {advice}")
        self.what, self.where, self.advice = what, where, advice


def user_line(frames=None) -> str:
    """'file:line: source' of the innermost frame outside torch and this package (the
    user's forward that made the node), or '?'."""
    frames = traceback.extract_stack() if frames is None else frames
    for f in reversed(frames):
        if f.filename.startswith(_SKIP) or f.filename.startswith("<"):
            continue
        code = (f.line or linecache.getline(f.filename, f.lineno)).strip()
        code = code.split("  #")[0].rstrip()           # the source, not its trailing comment
        return f"{os.path.relpath(f.filename)}:{f.lineno}: {code}"
    return "?"


class _Tracer(fx.Tracer):
    """Every module but the one traced is a leaf; each node remembers its source line."""

    def __init__(self, root):
        super().__init__()
        self.root_module = root

    def is_leaf_module(self, m, qualname):
        return m is not self.root_module

    def trace(self, root, *args, **kwargs):
        # frames above this call are the translator's callers, never the model's source
        self.depth = len(traceback.extract_stack())
        return super().trace(root, *args, **kwargs)

    def create_node(self, *args, **kwargs):
        node = super().create_node(*args, **kwargs)
        node.meta["line"] = user_line(traceback.extract_stack()[self.depth:])
        return node


class BadExample(ValueError):
    """The torch model itself fails on the example inputs (wrong shapes or dtypes)."""


@contextmanager
def _no_custom_functions():
    """fx would trace straight through a custom autograd Function's forward and lose its
    backward: refuse it instead, naming the class and the line."""
    original = torch.autograd.Function.apply

    def refuse(cls, *args, **kwargs):
        if any(isinstance(a, fx.Proxy) for a in args):
            raise Untranslatable(f"custom autograd Function {cls.__name__}", user_line(),
                                 f"write {cls.__name__} by hand as a jax.custom_vjp function (its forward and "
                                 "backward) and call it where the generated code has this line")
        return original.__func__(cls, *args, **kwargs)
    torch.autograd.Function.apply = classmethod(refuse)
    try:
        yield
    finally:
        torch.autograd.Function.apply = original


@dataclass
class Traced:
    module: torch.nn.Module
    graph: fx.Graph          # nodes carry meta["val"] (the example's value) and meta["line"]


def record_inputs(model, example_inputs, example_kwargs=None) -> dict:
    """{id(module): (args, kwargs)} of each module's first call on the example inputs
    (positional `example_inputs`, keyword `example_kwargs`)."""
    seen, handles = {}, []

    def hook(module, args, kwargs):
        seen.setdefault(id(module), (args, kwargs))
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            model(*example_inputs, **(example_kwargs or {}))
    except Exception as error:                          # noqa: BLE001 (the user's model)
        shapes = ", ".join([f"{tuple(a.shape)} {a.dtype}" for a in example_inputs] +
                           [f"{k}={tuple(a.shape)} {a.dtype}" for k, a in (example_kwargs or {}).items()])
        where = user_line(traceback.extract_tb(error.__traceback__))
        raise BadExample(f"the torch model raised {type(error).__name__} on the example inputs ({shapes}) at "
                         f"{where}: {str(error).splitlines()[0] if str(error) else ''}") from None
    finally:
        for h in handles:
            h.remove()
    return seen


class _Recorder(fx.Interpreter):
    def run_node(self, n):
        out = super().run_node(n)
        n.meta["val"] = out
        return out


def trace(module, args, kwargs) -> Traced:
    """fx-trace `module` (children as leaves) and run it on its recorded inputs."""
    tracer = _Tracer(module)
    try:
        with _no_custom_functions():
            graph = tracer.trace(module)
    except Untranslatable:
        raise
    except fx.proxy.TraceError as error:
        where = user_line(traceback.extract_tb(error.__traceback__))
        raise Untranslatable(f"control flow on a traced value in {type(module).__name__}.forward", where,
                             "fx cannot follow data-dependent Python control flow; write this branch with "
                             f"jnp.where or jax.lax.cond by hand ({error})") from None
    gm = fx.GraphModule(module, graph)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    bound = list(args) + [kwargs[p.target] if p.target in kwargs else (p.args[0] if p.args else None)
                          for p in placeholders[len(args):]]
    with torch.no_grad():
        _Recorder(gm).run(*bound)
    return Traced(module, graph)
