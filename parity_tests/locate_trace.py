"""Every module's inputs, outputs and output gradients, on both sides, in the order the
modules ran: what locate.py compares.

torch: forward hooks record each module's inputs and outputs and call retain_grad on
the outputs; one backward fills their .grad.
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


def _tensors(value) -> list:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def torch_trace(model, x, y, loss_fn, paths: set) -> dict:
    """{path: dict(start, end, inputs, outputs, grads)} for the modules in `paths`."""
    records, counter, hooks = {}, [0], []

    def pre(path):
        def hook(module, args):
            records[path] = dict(start=counter[0])
            counter[0] += 1
        return hook

    def post(path):
        def hook(module, args, out):
            leaves = _tensors(out)
            for t in leaves:
                if t.requires_grad:
                    t.retain_grad()
            records[path].update(end=counter[0], inputs=[t.detach().cpu().numpy().copy() for t in _tensors(args)],
                                 live=leaves)
            counter[0] += 1
        return hook
    for path, module in model.named_modules():
        if path in paths:
            hooks += [module.register_forward_pre_hook(pre(path)), module.register_forward_hook(post(path))]
    try:
        model.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
    finally:
        for h in hooks:
            h.remove()
    for r in records.values():
        live = r.pop("live", [])
        r["outputs"] = [t.detach().cpu().numpy().copy() for t in live]
        r["grads"] = [None if t.grad is None else t.grad.detach().cpu().numpy().copy() for t in live]
    return records


@contextlib.contextmanager
def _intercepted(classes, on_call):
    """Each class's __call__ wrapped by on_call(original, self, args, kwargs)."""
    saved = {cls: cls.__dict__.get("__call__") for cls in classes}
    try:
        for cls in classes:
            original = cls.__call__
            cls.__call__ = (lambda orig: lambda self, *a, **k: on_call(orig, self, a, k))(original)
        yield
    finally:
        for cls, own in saved.items():
            if own is None:
                del cls.__call__
            else:
                cls.__call__ = own


def nnx_trace(model, x, y, loss_fn, paths: dict, dtype: str) -> dict:
    """The NNX side: `paths` maps NNX path tuples to the torch paths they are recorded
    under. Returns the same records as torch_trace."""
    with dtype_scope(dtype):
        graphdef, state = nnx.split(model)
        classes = {type(m) for p, m in nnx.iter_modules(model) if p in paths}
        x, y = jnp.asarray(x), jnp.asarray(y)
        order: dict = {}                               # path -> (start, end), plain ints

        def run(deltas):
            """The loss, and each module's inputs and outputs (tracers, as vjp's aux)."""
            m = nnx.merge(graphdef, state)
            ids = {id(mod): paths[p] for p, mod in nnx.iter_modules(m) if p in paths}
            seen, counter, busy = {}, [0], set()

            def on_call(original, self, args, kwargs):
                path = ids.get(id(self))
                if path is None or id(self) in busy:     # a subclass's call of its parent's
                    return original(self, *args, **kwargs)
                busy.add(id(self))
                start = counter[0]
                counter[0] += 1
                try:
                    out = original(self, *args, **kwargs)
                finally:
                    busy.discard(id(self))
                if deltas is not None:
                    if path not in deltas:                 # the first pass: shapes only
                        deltas[path] = jax.tree.map(jnp.zeros_like, out)
                    else:
                        out = jax.tree.map(lambda o, d: o + d, out, deltas[path])
                order[path] = (start, counter[0])
                counter[0] += 1
                seen[path] = ([a for a in jax.tree.leaves((args, kwargs)) if isinstance(a, jax.Array)],
                              jax.tree.leaves(out))
                return out
            with _intercepted(classes, on_call):
                loss = loss_fn(m(x), y)
            return loss, seen

        zeros: dict = {}
        run(zeros)                                     # fills `zeros` with each output's shape
        zeros = {p: jax.tree.map(lambda z: z, d) for p, d in zeros.items()}
        loss, vjp, seen = jax.vjp(run, zeros, has_aux=True)
        (grads,) = vjp(jnp.ones_like(loss))
        records = {}
        for path, (inputs, outputs) in seen.items():
            records[path] = dict(start=order[path][0], end=order[path][1],
                                 inputs=[np.asarray(a) for a in inputs], outputs=[np.asarray(a) for a in outputs],
                                 grads=[np.asarray(g) for g in jax.tree.leaves(grads[path])])
        return records
