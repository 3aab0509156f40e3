"""Every module's inputs, outputs and output gradients, on both sides, in the order the
modules ran: what locate.py compares.

torch: forward hooks record each module's inputs and outputs and call retain_grad on
the outputs; one backward fills their .grad. Each hook hands the rest of the model a
clone of the output, so that in-place ops downstream cannot rewrite what it recorded.
NNX: each intercepted module's class __call__ is wrapped for the duration of one
traced call; the wrapper adds a zero perturbation to the module's output and records
its inputs and outputs, and jax.vjp of the loss with respect to the perturbations is
the gradient with respect to each module's output. The model is split and merged
inside the traced function, so batch statistics written during the call land on a
throwaway copy, not on the harness's clone.
"""
from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from jaxport.numerics import dtype_scope
from parity_tests.engine.sides.port_nnx import jax_inputs
from parity_tests.engine.sides.pytrees import call


def _tensors(value) -> list:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _cloned(value):
    """The same structure with every tensor cloned (autograd passes through a clone)."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, tuple) and hasattr(value, "_fields"):          # a NamedTuple
        return type(value)(*(_cloned(v) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_cloned(v) for v in value)
    return value


def torch_trace(model, x, y, loss_fn, paths: set) -> dict:
    """{(path, call): dict(start, end, inputs, outputs, grads)} for the modules in
    `paths`, one record per call: a module called twice (one Dropout after the embedding
    and after the LSTM, of different widths) has two, in the order it was called."""
    records, counter, hooks, calls, open_calls = {}, [0], [], {}, {}

    def pre(path):
        def hook(module, args):
            key = (path, calls.get(path, 0))
            calls[path] = key[1] + 1
            open_calls.setdefault(path, []).append(key)
            records[key] = dict(start=counter[0])
            counter[0] += 1
        return hook

    def post(path):
        def hook(module, args, out):
            key = open_calls[path].pop()
            leaves = _tensors(out)
            for t in leaves:
                if t.requires_grad:
                    t.retain_grad()
            records[key].update(end=counter[0], inputs=[t.detach().cpu().numpy().copy() for t in _tensors(args)],
                                live=leaves)
            counter[0] += 1
            # the rest of the model gets a copy: an in-place op after this module
            # (nn.ReLU(inplace=True), everywhere in torchvision) rewrites the copy, not
            # the recorded output, whose .grad is still the gradient of this output
            return _cloned(out)
        return hook
    for path, module in model.named_modules():
        if path in paths:
            hooks += [module.register_forward_pre_hook(pre(path)), module.register_forward_hook(post(path))]
    try:
        model.zero_grad()
        loss_fn(call(model, x), y).backward()
    finally:
        for h in hooks:
            h.remove()
    for r in records.values():
        live = r.pop("live", [])
        r["outputs"] = [t.detach().cpu().numpy().copy() for t in live]
        r["grads"] = [None if t.grad is None else t.grad.detach().cpu().numpy().copy() for t in live]
    return {key: r for key, r in records.items() if "end" in r}


@contextlib.contextmanager
def _intercepted(classes, on_call):
    """Each class's __call__ wrapped by on_call(original, self, args, kwargs)."""
    classes = [cls for cls in classes if callable(getattr(cls, "__call__", None))]   # noqa: B004 (a container may have none)
    saved = {cls: cls.__dict__.get("__call__") for cls in classes}
    try:
        for cls in classes:
            cls.__call__ = (lambda orig: lambda self, *a, **k: on_call(orig, self, a, k))(cls.__call__)
        yield
    finally:
        for cls, own in saved.items():
            if own is None:
                del cls.__call__
            else:
                cls.__call__ = own


class _Delta(nnx.Variable):
    """A zero added to one leaf of a module's output: its gradient is the gradient with
    respect to that output."""


class _Deltas(nnx.Module):
    def __init__(self, zeros: list):
        self.leaves = nnx.List([_Delta(z) for z in zeros])


def nnx_trace(model, x, y, loss_fn, paths: dict, dtype: str) -> dict:
    """The NNX side: `paths` maps NNX path tuples to the torch paths they are recorded
    under. Returns the same records as torch_trace, keyed (torch path, call). A call
    made inside a transform of the model's own (the cell's Linears inside nnx.RNN's
    scan) is not recorded: its values live in that trace, not in the model's.
    Differentiated with nnx.value_and_grad (not jax.vjp over a merge): a module that
    updates its own state during the call (an RNN cell's carry RNG count) must be
    carried by NNX's transform."""
    from jax.extend.core import get_opaque_trace_state  # noqa: PLC0415
    with dtype_scope(dtype):
        model = nnx.clone(model)                       # batch statistics land on a copy
        classes = {type(m) for p, m in nnx.iter_modules(model) if p in paths}
        x, y = jax_inputs(x, dtype), jax_inputs(y, dtype)
        order: dict = {}                               # (path, call) -> (start, end), plain ints
        slots: dict = {}                               # (path, call) -> (treedef, first leaf index)

        def run(deltas, m):
            """The loss, and each module call's inputs and outputs (as aux)."""
            ids = {id(mod): paths[p] for p, mod in nnx.iter_modules(m) if p in paths}
            seen, counter, busy, calls = {}, [0], set(), {}
            outer = get_opaque_trace_state()

            def on_call(original, self, args, kwargs):
                path = ids.get(id(self))
                if path is None or id(self) in busy or get_opaque_trace_state() != outer:
                    return original(self, *args, **kwargs)   # a subclass's call of its parent's, or inside a scan
                key = (path, calls.get(path, 0))
                calls[path] = key[1] + 1
                busy.add(id(self))
                start = counter[0]
                counter[0] += 1
                try:
                    out = original(self, *args, **kwargs)
                finally:
                    busy.discard(id(self))
                if deltas is None:                       # the first pass: shapes only
                    leaves, treedef = jax.tree.flatten(out)
                    slots[key] = (treedef, len(zeros))
                    zeros.extend(jax.ShapeDtypeStruct(v.shape, v.dtype) for v in leaves)
                elif key in slots:
                    treedef, first = slots[key]
                    leaves = jax.tree.leaves(out)
                    out = jax.tree.unflatten(treedef, [v + deltas.leaves[first + k][...]
                                                       for k, v in enumerate(leaves)])
                order[key] = (start, counter[0])
                counter[0] += 1
                seen[key] = ([a for a in jax.tree.leaves((args, kwargs)) if isinstance(a, jax.Array)],
                             jax.tree.leaves(out))
                return out
            with _intercepted(classes, on_call):
                loss = loss_fn(call(m, x), y)
            return loss, seen

        zeros: list = []
        # Both passes compiled (one program each): run eagerly, every primitive of the
        # model compiles on its own, which cost seconds per check.
        nnx.jit(lambda m: run(None, m)[0])(nnx.clone(model))   # fills `slots` and `zeros`
        deltas = _Deltas([jnp.zeros(z.shape, z.dtype) for z in zeros])
        (_, seen), grads = nnx.jit(nnx.value_and_grad(run, argnums=nnx.DiffState(0, _Delta), has_aux=True))(
            deltas, model)
        by_index = nnx.to_pure_dict(grads).get("leaves", {}) if zeros else {}
        grad_leaves = [np.asarray(by_index[k]) for k in range(len(zeros))]
        return {key: dict(start=order[key][0], end=order[key][1], inputs=[np.asarray(a) for a in inputs],
                          outputs=[np.asarray(a) for a in outputs],
                          grads=grad_leaves[slots[key][1]:slots[key][1] + len(outputs)] if key in slots else [])
                for key, (inputs, outputs) in seen.items()}
