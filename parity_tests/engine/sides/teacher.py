"""The steppers of the teacher-forced rung (thousands of steps per cell), and the
referee for ReLU kinks that float32 cannot decide.

Both come from the backends' public contract (`training.stepper`): torch's keeps its
model, optimizer and loss between steps, exactly like torchref.fit (the ladder checks
its losses equal fit's bit for bit); jaxport's keeps its compiled step and puts the
exchange-format arrays into the pytree leaves directly (the ladder checks it equals
jaxport.train_step bit for bit).
"""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import torch
from torch import nn

import jaxport.training as jt
import torchref.training as tt
from torchref.state import tensor

_JAX_STEPPERS: dict = {}


def torch_teacher(cell, config, params, opt_state=None) -> tt.Stepper:
    return tt.stepper(cell.example, config, params, opt_state, **cell.kw)


def jax_stepper(cell, config) -> jt.Stepper:
    """One per (cell, configuration), reused across runs: building one traces its step."""
    if (cell, config) not in _JAX_STEPPERS:
        _JAX_STEPPERS[(cell, config)] = jt.stepper(cell.example, config, None, **cell.kw)
    return _JAX_STEPPERS[(cell, config)]


def forget_jax_steppers() -> None:
    _JAX_STEPPERS.clear()


def opt_state_pair(jax_state: dict, torch_state: dict) -> tuple[dict, dict]:
    """Both optimizer states over the union of their keys, a missing moment as zeros
    (torch creates its SGD momentum buffer at the first step; optax starts it at 0)."""
    keys = sorted(set(jax_state) | set(torch_state))
    fill = lambda s, o, k: s[k] if k in s else np.zeros_like(o[k])  # noqa: E731
    return ({k: fill(jax_state, torch_state, k) for k in keys},
            {k: fill(torch_state, jax_state, k) for k in keys})


# ---- ReLU kinks that the dtype cannot decide -----------------------------------------
UNIT_ROUNDOFF = {"float32": 2.0 ** -24, "float64": 2.0 ** -53}
MAX_KINKS = 8


def _hidden_linears(model) -> list:
    """The Linear layers whose outputs go through a ReLU: all but the last."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][:-1]


def undecidable_kinks(cell, config, state, xb) -> list[tuple[int, int, int]]:
    """(layer, sample, unit) whose pre-activation z = W h + b lies within the dtype's
    worst-case dot-product rounding bound (n + 1) u (|W| |h| + |b|) of 0, computed in
    float64 from the same weights: there, which side of the ReLU's kink a sample falls on
    (and so whether it contributes to the unit's gradient) is down to rounding order."""
    teacher = torch_teacher(dataclasses.replace(cell, dtype="float64"), config, state[0])
    u, found = UNIT_ROUNDOFF[cell.dtype], []

    def probe(module, inputs, out):
        h = inputs[0].abs()
        bound = (module.in_features + 1) * u * (h @ module.weight.abs().T + module.bias.abs())
        found.append(out.abs() <= bound)
    handles = [m.register_forward_hook(probe) for m in _hidden_linears(teacher.model)]
    try:
        with torch.no_grad():
            teacher.model(tensor(xb, "float64", cell.device))
    finally:
        for handle in handles:
            handle.remove()
    return [(layer, *map(int, idx)) for layer, mask in enumerate(found) for idx in mask.nonzero()]


def step_with_kinks_decided(cell, config, state, xb, yb, kinks, signs):
    """One float64 torch step from `state` with each kink's pre-activation set to
    +-1e-300 (ReLU' 1 or 0); the forward values move by less than their rounding bound,
    and gradients flow through to W, b and h as before."""
    teacher = torch_teacher(dataclasses.replace(cell, dtype="float64"), config, state[0], state[1])
    layers = _hidden_linears(teacher.model)

    def force(layer):
        def hook(module, inputs, out):
            target, mask = torch.zeros_like(out), torch.zeros_like(out, dtype=torch.bool)
            for (k, sample, unit), sign in zip(kinks, signs):
                if k == layer:
                    target[sample, unit], mask[sample, unit] = sign * 1e-300, True
            # value `target` exactly (out - out.detach() is 0), gradient 1 to `out`
            return torch.where(mask, target + (out - out.detach()), out)
        return hook
    handles = [m.register_forward_hook(force(i)) for i, m in enumerate(layers)]
    try:
        return teacher.step(xb, yb)
    finally:
        for handle in handles:
            handle.remove()


def kink_referee(cell, config, state, xb, yb, agree):
    """When jaxport's step disagrees with torch's: if some ReLU kinks are undecidable in
    the dtype, find a way of deciding them under which float64 torch agrees with
    jaxport (`agree(result) -> bool`, the ladder's own check). Returns (kinks, signs) or
    None (no such kinks, too many, or no decision explains the difference)."""
    kinks = undecidable_kinks(cell, config, state, xb)
    if not kinks or len(kinks) > MAX_KINKS:
        return None
    for signs in itertools.product((1.0, -1.0), repeat=len(kinks)):
        if agree(step_with_kinks_decided(cell, config, state, xb, yb, kinks, signs)):
            return kinks, signs
    return None
