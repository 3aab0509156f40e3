"""One step's comparison for rungs 4 and 5 (rungs/port_rungs.py): the four quantities
(loss, gradients, parameters and state after, optimizer state after) under the plan
of tolerances (bounds/step_bounds.py), the float32 error against float64 where the
measured bound is exceeded (port_exact.py), and rung 5's chunks of steps compared at
once."""
from __future__ import annotations

import numpy as np

from parity_tests.engine import parity
from parity_tests.engine.bounds.criterion import fits
from parity_tests.engine.bounds.port_exact import check_against_float64, exact_step
from parity_tests.engine.bounds.step_bounds import candidate_view, step_tolerances
from parity_tests.engine.bounds.step_noise import MEMBERS, MORE_MEMBERS, StepBound


def compare_step(run, rung: int, prefix: str, state, xb, yb, t, j, step) -> bool:
    """One step's four quantities; float32: the result term alone, then the measured
    bound with MEMBERS members, then MORE_MEMBERS (a maximum over 4 random directions
    can miss the worst one), as the ladder does. float64: the table, then the table
    plus the measured row-order noise (TableAndNoise)."""
    # the state a step updates besides the parameters (BatchNorm's running statistics):
    # compared at every step, as torch's buffers viewed in the candidate's names
    expected = candidate_view(run, t)
    plan = (0 if run.dtype == "float32" else None, MEMBERS, MORE_MEMBERS)
    for members in plan:
        kept = []
        tols = step_tolerances(run, state, xb, yb, t, members, kept)
        fit = _all_fit(j, expected, tols)
        if fit or members == plan[-1]:
            break
    names = [prefix + name for name in quantity_names(run)]
    if run.dtype == "float32" and not fit and run.float64_fallback:   # port_exact.py
        exact = candidate_view(run, exact_step(run.side, state, xb, yb))
        # the bound's members are correct float32 steps too (port_exact.py): per quantity
        members = list(zip(*(candidate_view(run, m) for m in kept))) or [()] * len(names)
        # (an empty quantity, no running statistics or no moments, has nothing to check there)
        return check_against_float64(run, rung, list(zip(names, j, expected, tols, exact, members)), step)
    ok = True
    for name, a, e, tol in zip(names, j, expected, tols):
        if _not_empty(e):
            ok &= run.check(a, e, rung=rung, quantity=name, tol=tol, step=step)
    return ok


def quantity_names(run) -> tuple:
    return ("loss", "gradients", "parameters and state after the update" if run.cand.state_paths else
            "parameters after the update", "optimizer state after the update")


def _all_fit(actual: tuple, expected: tuple, tols: tuple) -> bool:
    return all(fits(a, e, tol) for a, e, tol in zip(actual, expected, tols))


def _not_empty(expected) -> bool:
    """Every quantity but an empty one (no running statistics, no optimizer moments)."""
    return not (isinstance(expected, dict) and not expected)


CHUNK = 50                             # teacher-forced steps compared at once


def flush(run, chunk: list) -> bool:
    """The chunk's steps compared at once where each fits the first tolerance (float64
    the table; float32 the result term alone: ~50x less overhead over thousands of
    steps), else one by one up to the first failing step, which names the problem."""
    if not chunk:
        return True
    members = 0 if run.dtype == "float32" else None
    views = [candidate_view(run, t) for _, _, t, _, _ in chunk]
    if all(_all_fit(j, e, step_tolerances(run, state, None, None, t, members))
           for (_, state, t, j, _), e in zip(chunk, views)):
        actual, expected = _stack([j for _, _, _, j, _ in chunk]), _stack(views)
        tols = (parity.FLOAT64,) * 4 if members is None else tuple(StepBound(0.0, e) for e in expected)
        for a, e, tol, name in zip(actual, expected, tols, quantity_names(run)):
            if _not_empty(e):
                run.check(a, e, rung=5, quantity=name, tol=tol, step=chunk[0][0], step_axis=True)
        chunk.clear()
        return True
    # all() stops at the first failing step
    ok = all(compare_step(run, 5, "", state, run.x[idx], run.y[idx], t, j, step) for step, state, t, j, idx in chunk)
    chunk.clear()
    return ok


def _stack(steps: list) -> tuple:
    """[(loss, grads, params, moments)] per step -> the same with a leading step axis."""
    def cat(dicts):
        return {k: np.stack([d[k] for d in dicts]) for k in dicts[0]} if dicts[0] else {}
    return (np.array([s[0] for s in steps]), *(cat([s[i] for s in steps]) for i in (1, 2, 3)))
