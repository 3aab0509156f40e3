"""Gradient clipping by global norm on both sides, with torch's arithmetic
(torch.nn.utils.clip_grad_norm_), for check_port's `clip_grad_norm=`.

torch: the norm of the per-tensor 2-norms, then every gradient times
min(max_norm / (norm + 1e-6), 1), between backward and the optimizer's step (the
PyTorch examples' word-level LM clips at 0.25, nanoGPT at 1.0). optax.clip_by_global_norm
differs: it divides by the norm itself, without the 1e-6, and only when the norm exceeds
max_norm; a relative 1e-6 / norm of every clipped update, which float64 sees at rung 4.
The gradients each side reports are the unclipped ones (both sides compare them at
rung 3); the clipped ones move the parameters.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import torch

TORCH_EPS = 1e-6


def torch_clip(grads, max_norm: float):
    """torch's clip_grad_norm_ as a function of a gradient pytree."""
    leaves, treedef = jax.tree.flatten(grads)
    norm = jnp.linalg.norm(jnp.stack([jnp.linalg.norm(g.ravel()) for g in leaves]))
    coef = jnp.minimum(max_norm / (norm + TORCH_EPS), 1.0)
    return jax.tree.unflatten(treedef, [g * coef.astype(g.dtype) for g in leaves])


def clipped_optax(tx: optax.GradientTransformation, max_norm: float) -> optax.GradientTransformation:
    """tx with torch's clipping applied to its gradients first; tx's own state, so the
    optimizer state still converts to and from torch's."""
    def update(grads, state, params=None):
        return tx.update(torch_clip(grads, max_norm), state, params)
    return optax.GradientTransformation(tx.init, update)


def clip_before_step(optimizer, max_norm: float):
    """A torch optimizer whose step() clips its parameters' gradients first, as a
    training loop calls clip_grad_norm_ between backward() and step()."""
    step = optimizer.step

    def clipped(closure=None):
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        return step(closure) if closure is not None else step()
    if hasattr(step, "_wrapped_by_lr_sched"):
        # a scheduler built with the optimizer (a factory's (optimizer, scheduler))
        # wrapped step() first; its wrapper is inside this one and still sees every
        # step, so its "step() overridden after the scheduler" warning does not apply
        clipped._wrapped_by_lr_sched = True
    clipped.clips = True               # the global norm would mix vmapped members: ensemble.py runs them in turn
    optimizer.step = clipped
    return optimizer


def with_clipping(pair, max_norm):
    """An optimizer pair (port_objectives.OptimizerPair) that clips on both sides."""
    import dataclasses  # noqa: PLC0415

    from parity_tests.engine.sides.port_objectives import PortInputError  # noqa: PLC0415
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not max_norm > 0:
        raise PortInputError(f"clip_grad_norm must be a positive number, not {max_norm!r}")

    def factory(params):
        built = pair.torch(params)
        clip_before_step(built[0] if isinstance(built, tuple) else built, float(max_norm))
        return built
    return dataclasses.replace(pair, label=f"{pair.label}, clip_grad_norm_ {max_norm:g}", torch=factory,
                               optax=clipped_optax(pair.optax, float(max_norm)))
