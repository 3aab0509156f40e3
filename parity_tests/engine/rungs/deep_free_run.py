"""Rungs 6-7 for the deep examples: whole runs from the same initial weights and state.

float64: judged step by step to the end, with the table's tolerance (parity.FLOAT64).
Measured on this CPU: the default runs' per-step losses agree to 5e-14 (cnn), 7e-11
(lstm) and 2e-13 (gru) relative, the fitted weights to 4e-14, 4e-12, 5e-15: in float64
these runs reach no predictability horizon.

float32: one rounding's difference grows until the runs are as far apart as torch runs
a rounding apart, so the outcome is judged against torch's own sensitivity (docs/design.md,
"The parity ladder"): MEMBERS torch runs whose parameters each move one float32 ulp in
a random direction after every update, and torch in float64 from the same float32
weights (torch's own float32 error: a run that is not chaotic, gru's, spreads its
members less than another implementation's roundings move it, since XLA's float32
tanh and sigmoid differ from torch's by more than an ulp of the weights). jaxport's
held-out loss, held-out accuracy and the mean training loss of the last epoch must
lie within the range of these, widened by that range on each side (accuracy: by at
least one image).
"""
from __future__ import annotations

import numpy as np

import jaxport.training as jt
import torchref.training as tt
from parity_tests.engine.bounds import ensemble
from parity_tests.engine.rungs.deep_ladder import DeepCell, DeepRun, cast, data, default_run, init
from parity_tests.engine.parity import check, tolerance
from portcore import specs

# The portable criterion's ensemble size (parity_tests/engine/bounds/ensemble.py). With 4 members the
# range was too narrow to be portable: on MKL's COMPATIBLE code path jaxport's lstm
# float32 last-epoch loss fell 1% of the range outside it (4.02e-6 off, 3.97e-6 allowed),
# while the chance that one more run falls outside the range of n is 2 / (n + 1): 40% for
# 4 members, 12% for 16, before the widening.
MEMBERS = ensemble.MEMBERS
# A loss's range is widened by at least this, relative: gru's float32 run is not chaotic,
# so torch's variants all land within 1e-8 relative of each other, while jaxport's
# float32 XLA ops (tanh, logistic: a few ulps, not correctly rounded, at every one of
# 690 steps) land 3e-5 relative away (measured; every teacher-forced step of the run
# agrees within rung 5's bound). 1e-4 is 3x that.
LOSS_FLOOR = 1e-4
_FITS: dict = {}


class TensorScaled:
    """The table's float64 1e-10, relative to each tensor's largest entry: after a whole
    run an entry near zero carries the rounding of the O(max) updates that moved it
    (lstm: 1.9e-12 on an entry of 1.3e-3, of a tensor whose largest is 0.9; a held-out
    logit of 0.02 off by 4.9e-12, where the largest logit is ~10)."""
    RTOL = 1e-10

    def allowed(self, expected, name=None, step_axis=False):
        return self.RTOL * (np.max(expected) if np.size(expected) else 0.0) + 1e-300

    def __str__(self):
        return f"{self.RTOL:g} x the tensor's largest entry"


def fit_run(name, cell: DeepCell, run: DeepRun, start=None) -> specs.FitResult:
    """A backend's ("torch" or "jaxport") fit of the run. start: begin from the initial
    weights rounded to this dtype (float64 torch from float32 weights)."""
    key = (name, cell, run, start)
    if key not in _FITS:
        x, y = data(cell.example, seed=run.seed)
        p = cast(cast(init(cell.example, run), start or cell.dtype), cell.dtype)
        order = specs.batch_order(len(x), run.config.epochs, run.config.shuffle, run.seed)
        _FITS[key] = {"torch": tt, "jaxport": jt}[name].fit(cell.example, p, x, y, order, run.config, **cell.kw)
    return _FITS[key]


def nudged_runs(cell: DeepCell, run: DeepRun) -> list[specs.FitResult]:
    """MEMBERS torch runs whose parameters each move one ulp in a random direction after
    every update (ensemble.py: one vmapped computation; BatchNorm's statistics and the
    dropout step counter run along per member): the size of the rounding differences
    that another implementation makes every step."""
    key = ("nudged", cell, run)
    if key not in _FITS:
        x, y = data(cell.example, seed=run.seed)
        order = specs.batch_order(len(x), run.config.epochs, run.config.shuffle, run.seed)
        members = ensemble.run(cell.example, cast(init(cell.example, run), cell.dtype), x, y, order, run.config,
                               dtype=cell.dtype, device=cell.device, members=MEMBERS + 1)
        # member 0 is not moved (torch's own run, batched): torch's fit stands for it
        _FITS[key] = [specs.FitResult(s, s.reshape(len(order), -1).mean(axis=1), params, None, 0.0)
                      for s, params in zip(members.step_losses[1:], members.params[1:])]
    return _FITS[key]


def outcome(backend, cell: DeepCell, run: DeepRun, result: specs.FitResult) -> dict:
    xh, yh = data(cell.example, held_out=True, seed=run.seed)
    logits = backend.predict(cell.example, result.params, xh, **cell.kw)
    per_epoch = len(result.step_losses) // max(1, len(result.epoch_losses))
    return {"held-out loss": specs.cross_entropy(logits, yh), "held-out accuracy": specs.class_accuracy(logits, yh),
            "last epoch's mean training loss": float(np.mean(result.step_losses[-per_epoch:]))}


class RangeTol:
    """Inside [lo - widen, hi + widen], written as parity.check's |actual - centre| <= allowed
    so that the comparison is recorded and reported like every other."""

    def __init__(self, lo, hi, widen):
        self.lo, self.hi, self.widen = lo, hi, widen

    def allowed(self, expected, name=None, step_axis=False):
        return (self.hi - self.lo) / 2 + self.widen

    def __str__(self):
        return (f"torch's range [{self.lo:.6g}, {self.hi:.6g}] (torch, {MEMBERS} runs nudged 1 ulp a step, "
                f"torch float64) widened by {self.widen:.3g}")


def _within_torch_range(cell, run, rung, quantities):
    """float32: each quantity of jaxport's run inside the range of torch's run, its
    members and torch float64, widened by that range on each side (LOSS_FLOOR, one image)."""
    exact = DeepCell(cell.example, "float64", cell.device)       # from the same float32 weights
    ref = [outcome(tt, cell, run, r) for r in (fit_run("torch", cell, run), *nudged_runs(cell, run))]
    ref.append(outcome(tt, exact, run, fit_run("torch", exact, run, start=cell.dtype)))
    ours = outcome(jt, cell, run, fit_run("jaxport", cell, run))
    n_held = len(data(cell.example, held_out=True, seed=run.seed)[1])
    for q in quantities:
        values = np.array([r[q] for r in ref])
        lo, hi = float(values.min()), float(values.max())
        widen = max(hi - lo, 1.0 / n_held if "accuracy" in q else LOSS_FLOOR * abs(hi))
        check(ours[q], (lo + hi) / 2, where=cell.where(run), rung=rung, tol=RangeTol(lo, hi, widen),
              quantity=f"{q} (vs the centre of torch's range)")


def rung6_free_running(cell: DeepCell, run: DeepRun | None = None) -> None:
    run = run or default_run(cell.example)
    if cell.dtype == "float64":
        t, j = fit_run("torch", cell, run), fit_run("jaxport", cell, run)
        check(j.step_losses, t.step_losses, where=cell.where(run), rung=6, step_axis=True,
              quantity="every step's loss, the whole run", tol=tolerance("float64", 5))
        return
    _within_torch_range(cell, run, 6, ["last epoch's mean training loss"])


def rung7_fitted_model(cell: DeepCell, run: DeepRun | None = None) -> None:
    run = run or default_run(cell.example)
    if cell.dtype == "float64":
        t, j = fit_run("torch", cell, run), fit_run("jaxport", cell, run)
        # a logit near zero is a sum of O(largest logit) terms: scaled like the weights
        kw = dict(where=cell.where(run), rung=7, tol=TensorScaled())
        check(j.params, t.params, quantity="fitted weights and state (running stats, dropout step)", **kw)
        xh = data(cell.example, held_out=True, seed=run.seed)[0]
        check(jt.predict(cell.example, j.params, xh, **cell.kw), tt.predict(cell.example, t.params, xh, **cell.kw),
              quantity="held-out logits of the fitted models", **kw)
        return
    _within_torch_range(cell, run, 7, ["held-out loss", "held-out accuracy"])


