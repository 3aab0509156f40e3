"""The steppers of the teacher-forced rung (thousands of steps per cell).

Both come from the backends' public contract (`training.stepper`): torch's keeps its
model, optimizer and loss between steps, exactly like torchref.fit (the ladder checks
its losses equal fit's bit for bit); jaxport's keeps its compiled step and puts the
exchange-format arrays into the pytree leaves directly (the ladder checks it equals
jaxport.train_step bit for bit).
"""
from __future__ import annotations

import numpy as np

import jaxport.training as jt
import torchref.training as tt

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
