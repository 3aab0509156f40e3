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


def step_tolerances(run, state, xb, yb, t, members, keep: list | None = None) -> tuple:
    """(loss, grads, params, moments) tolerances of one step: float64 the table's
    (members None), or the table's plus the measured row-order noise; float32
    StepBound with `members` measured members (0: the result term alone), each
    member's step appended to `keep`."""
    if run.dtype == "float64":
        s = None if members is None else float64_spread(run.side, state, xb, yb, t, members=members)
        # None: the table alone (a one-row batch has no other order)
        return (parity.FLOAT64,) * 4 if s is None else tuple(map(TableAndNoise, candidate_view(run, s)))
    expected = candidate_view(run, t)
    if members == 0:
        return tuple(StepBound(0.0, e) for e in expected)
    s = step_spread(run.side, state, xb, yb, t, members=members, keep=keep)
    return tuple(map(StepBound, candidate_view(run, s), expected))     # sums of spreads where NNX sums


def candidate_view(run, t: tuple) -> tuple:
    """torch's step (loss, gradients, parameters and state, moments), or a spread of it,
    the last two viewed in the candidate's names, as the candidate returns them."""
    return (t[0], t[1], *run.cand.view(t[2], t[3]))


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
