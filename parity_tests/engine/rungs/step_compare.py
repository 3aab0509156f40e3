"""One step's comparison for rungs 4 and 5 (rungs/port_rungs.py): the four quantities
(loss, gradients, parameters and state after, optimizer state after) under the plan
of tolerances (bounds/step_bounds.py), the float32 error against float64 where the
measured bound is exceeded (port_exact.py), and rung 5's chunks of steps compared at
once."""
from __future__ import annotations

import numpy as np

from parity_tests.engine import parity
from parity_tests.engine.bounds.port_exact import check_against_float64, exact_step
from parity_tests.engine.bounds.step_bounds import fits, step_tolerances
from parity_tests.engine.bounds.step_noise import MEMBERS, MORE_MEMBERS, StepBound


def compare_step(run, rung: int, prefix: str, state, xb, yb, t, j, step) -> bool:
    """One step's four quantities; float32: the result term alone, then the measured
    bound with MEMBERS members, then MORE_MEMBERS (a maximum over 4 random directions
    can miss the worst one), as the ladder does. float64: the table, then the table
    plus the measured row-order noise (TableAndNoise)."""
    # the state a step updates besides the parameters (BatchNorm's running statistics):
    # compared at every step, as torch's buffers viewed in the candidate's names
    nnx_t = run.cand.view(t[2], t[3])
    expected = (t[0], t[1], nnx_t[0], nnx_t[1])
    names, actual = quantity_names(run), j
    plan = (0, MEMBERS, MORE_MEMBERS) if run.dtype == "float32" else (None, MEMBERS, MORE_MEMBERS)
    for members in plan:
        tols = step_tolerances(run, state, xb, yb, t, members)
        fit = all(fits(a, e, tol) for a, e, tol in zip(actual, expected, tols))
        if members != plan[-1] and not fit:
            continue
        if run.dtype == "float32" and not fit and run.float64_fallback:   # port_exact.py
            x64 = exact_step(run.side, state, xb, yb)
            exact = (x64[0], x64[1], *run.cand.view(x64[2], x64[3]))
            return check_against_float64(run, rung, [(prefix + n, a, e, tol, x) for n, a, e, tol, x in zip(
                names, actual, expected, tols, exact) if not (isinstance(e, dict) and not e)], fits, step)
        ok = True
        for a, e, tol, name in zip(actual, expected, tols, names):
            if isinstance(e, dict) and not e:
                continue
            ok &= run.check(a, e, rung=rung, quantity=prefix + name, tol=tol, step=step)
        return ok
    return False


def quantity_names(run) -> tuple:
    return ("loss", "gradients", "parameters and state after the update" if run.cand.state_paths else
            "parameters after the update", "optimizer state after the update")


CHUNK = 50                             # teacher-forced steps compared at once


def flush(run, chunk: list) -> bool:
    """The chunk's steps compared at once where each fits the first tolerance (float64
    the table; float32 the result term alone: ~50x less overhead over thousands of
    steps), else one by one up to the first failing step, which names the problem."""
    if not chunk:
        return True
    members = 0 if run.dtype == "float32" else None
    steps = []
    for step, state, t, j, idx in chunk:
        view = run.cand.view(t[2], t[3])
        expected = (t[0], t[1], view[0], view[1])
        tols = step_tolerances(run, state, None, None, t, members)
        if not all(fits(a, e, tol) for a, e, tol in zip(j, expected, tols)):
            break
        steps.append((j, expected))
    else:
        actual, expected = _stack([a for a, _ in steps]), _stack([e for _, e in steps])
        tols = (parity.FLOAT64,) * 4 if members is None else tuple(StepBound(0.0, e) for e in expected)
        for a, e, tol, name in zip(actual, expected, tols, quantity_names(run)):
            if not (isinstance(e, dict) and not e):
                run.check(a, e, rung=5, quantity=name, tol=tol, step=chunk[0][0], step_axis=True)
        chunk.clear()
        return True
    for step, state, t, j, idx in chunk:
        if not compare_step(run, 5, "", state, run.x[idx], run.y[idx], t, j, step):
            chunk.clear()
            return False
    chunk.clear()
    return True


def _stack(steps: list) -> tuple:
    """[(loss, grads, params, moments)] per step -> the same with a leading step axis."""
    def cat(dicts):
        return {k: np.stack([d[k] for d in dicts]) for k in dicts[0]} if dicts[0] else {}
    return (np.array([s[0] for s in steps]), *(cat([s[i] for s in steps]) for i in (1, 2, 3)))
