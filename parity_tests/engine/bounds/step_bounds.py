"""The tolerances of one step of rungs 2-5 (rungs/port_rungs.py): float64 the table's,
then the table plus torch's own float64 noise; float32 the measured step bound
(step_noise.StepBound over port_torch.step_spread), its result term alone first.
Spreads are viewed in the candidate's names, as its results are."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parity_tests.engine import parity
from parity_tests.engine.bounds.step_noise import NOISE_MULTIPLE, StepBound
from parity_tests.engine.sides.port_torch import float64_spread, step_spread


def step_tolerances(run, state, xb, yb, t, members) -> tuple:
    """(loss, grads, params, moments) tolerances of one step: float64 the table's
    (members None), or the table's plus the measured row-order noise; float32
    StepBound with `members` measured members (0: the result term alone)."""
    if run.dtype == "float64" and members is None:
        return (parity.FLOAT64,) * 4
    nnx_t = run.cand.view(t[2], t[3])
    if run.dtype == "float64":
        s = float64_spread(run.side, state, xb, yb, t, members=members)
        if s is None:                  # a one-row batch has no other order
            return (parity.FLOAT64,) * 4
        return (TableAndNoise(s[0]), TableAndNoise(s[1]), *map(TableAndNoise, run.cand.view(s[2], s[3])))
    if members == 0:
        return (StepBound(0.0, t[0]), StepBound(0.0, t[1]), StepBound(0.0, nnx_t[0]), StepBound(0.0, nnx_t[1]))
    s = step_spread(run.side, state, xb, yb, t, members=members)
    spread = run.cand.view(s[2], s[3])                           # sums of spreads where NNX sums
    return (StepBound(s[0], t[0]), StepBound(s[1], t[1]), StepBound(spread[0], nnx_t[0]),
            StepBound(spread[1], nnx_t[1]))


@dataclass
class TableAndNoise:
    """float64 where the table alone is exceeded: the table's tolerance plus
    NOISE_MULTIPLE x the spread of float64 torch steps over other row orders and from
    the state moved one float64 ulp (port_torch.float64_spread)."""
    spread: object                     # a float, or {name: array}

    def allowed(self, expected, name=None, step_axis=False):
        spread = self.spread[name] if isinstance(self.spread, dict) else self.spread
        return parity.FLOAT64.allowed(expected) + NOISE_MULTIPLE * np.asarray(spread)

    def __str__(self):
        return (f"{parity.FLOAT64} + {NOISE_MULTIPLE:g} x spread of float64 torch steps over other row orders "
                "and moved one ulp")


def fits(actual, expected, tol) -> bool:
    if isinstance(expected, dict):
        return all(k in actual and np.shape(actual[k]) == np.shape(v) and np.all(
            np.abs(np.asarray(actual[k], np.float64) - v) <= tol.allowed(np.abs(np.asarray(v, np.float64)), k))
            for k, v in expected.items())
    return bool(np.all(np.abs(np.float64(actual) - np.float64(expected)) <= tol.allowed(abs(np.float64(expected)))))
