"""The free-running rungs (6: the whole run, 7: the fitted model), once, for two sides,
judged by the portable criterion (bounds/criterion.py) against the torch ensemble
(bounds/ensemble.py).

The whole runs come from the run's `programs` (default: GenericRuns): torch's run as
its user runs it, the ensemble, and the candidate's run from the same start. For
check_port those are torch's own loop and the NNX clone's; for an example, torchref.fit
and jaxport's compiled whole run (its padding mask, its devices: example_sides.py).
The candidate's fitted state is compared in its own names, torch's viewed in them
(`cand.split`), parameters and running statistics apart.
"""
from __future__ import annotations

import numpy as np

from parity_tests.engine import parity
from parity_tests.engine.bounds import criterion, ensemble
from parity_tests.engine.sides.port_losses import CLASS_AXIS
from parity_tests.engine.sides.port_torch import Teacher


class GenericRuns:
    """check_port's whole runs: torch's own loop (port_torch.Teacher) and the candidate's
    (`cand.run`), over the run's batches from the shared start."""

    def __init__(self, run):
        self.run = run

    def reference(self) -> tuple[np.ndarray, dict]:
        teacher, r = Teacher(self.run.side), self.run
        losses = [teacher.step(r.x[idx], r.y[idx])[0] for idx in r.batches]
        return np.array(losses), teacher.state()[0]

    def ensemble(self) -> tuple[np.ndarray, list]:
        return ensemble.members(self.run.side, self.run.x, self.run.y, self.run.batches)

    def candidate(self) -> tuple[np.ndarray, object]:
        return self.run.cand.run(self.run.x, self.run.y, self.run.batches)


def free_runs(run) -> dict:
    """Both runs, the ensemble and the horizon, once per run (rungs 6 and 7 share them);
    recorded for the report's free-run section where the run has a `where`."""
    if run.free is None:
        programs = run.programs or GenericRuns(run)
        (t, t_arrays), (m, m_arrays), (j, j_state) = programs.reference(), programs.ensemble(), programs.candidate()
        spread = criterion.spread(m, t)
        run.free = dict(torch=t, torch_arrays=t_arrays, members=m, member_arrays=m_arrays, jax=j, jax_state=j_state,
                        spread=spread, horizon=criterion.horizon(spread, t, run.dtype), steps=len(t),
                        diff=np.abs(np.asarray(j, np.float64) - t),
                        allowed=criterion.per_step_allowed(spread, t, run.dtype))
        if parity.report_record() is not None and run.where:
            w = run.where
            parity.report_record().curves[(w["example"], w["form"], w["dtype"], w["device"], w["config"])] = run.free
    return run.free


def _checker(run, rung: int):
    """criterion's `check`: the run's own, recording and going on after a failure."""
    return lambda actual, expected, **c: run.check(actual, expected, rung=rung, **c)


def rung6_free_running(run) -> None:
    """Per-step losses up to the horizon; after it, the loss statistics; the fitted
    parameters and running statistics entry by entry or as one more draw of the
    ensemble (float32: else against torch's float64 run, the ensemble's last member)."""
    v = free_runs(run)
    exact_losses = v["members"][-1] if run.dtype == "float32" else None      # torch in float64 (ensemble.py)
    criterion.judge_losses(_checker(run, 6), v["jax"], v["torch"], v["members"], run.dtype, exact_losses)
    chaotic = v["horizon"] < v["steps"]
    ours, theirs = run.cand.fitted(v["jax_state"]), run.cand.split(v["torch_arrays"])
    members = [run.cand.split(a) for a in v["member_arrays"]]
    for part, quantity in ((0, "fitted parameters"), (1, "fitted running statistics")):
        if theirs[part]:
            exact = members[-1][part] if run.dtype == "float32" else None
            criterion.judge_fitted(_checker(run, 6), ours[part], theirs[part], [m[part] for m in members], chaotic,
                                   run.dtype, quantity, exact)


def fitted_model(run, predictions, loss: float) -> dict:
    """Rung 7's quantities: the loss and predictions on the evaluation rows (the run's
    eval_x and eval_y, else its data), and the accuracy where the loss classifies."""
    y = _eval_rows(run)[1]
    out = {"final loss" if run.eval_y is None else "held-out loss": float(loss),
           "predictions": np.asarray(predictions, np.float64)}
    if run.loss_name in CLASS_AXIS:
        # torch's layout: classes on axis 1 ((N, C, d1, ...) against (N, d1, ...)),
        # ignored targets left out, as the loss leaves them out
        options = run.objective.options if run.objective is not None else {}
        keep = y != options.get("ignore_index", -100)
        guess = np.argmax(predictions, axis=1)
        out["accuracy"] = float(np.mean(guess[keep] == y[keep])) if keep.any() else 1.0
    elif run.loss_name in ("bce", "bce_with_logits"):
        guess = (predictions > (0.0 if run.loss_name == "bce_with_logits" else 0.5)).astype(y.dtype)
        out["accuracy"] = float(np.mean(guess == y))
    return out


def _eval_rows(run) -> tuple:
    """Rung 7's rows: the run's eval_x and eval_y where given, else its data."""
    return (run.x if run.eval_x is None else run.eval_x), (run.y if run.eval_y is None else run.eval_y)


def _reference_model(run, arrays: dict, dtype: str | None = None) -> dict:
    side, (xs, ys) = run.side, _eval_rows(run)
    predictions = side.outputs(side.model(arrays, dtype), xs, dtype)
    return fitted_model(run, predictions, side.eval_loss(arrays, xs, ys, dtype))


def rung7_fitted_model(run) -> None:
    """The fitted models' loss, predictions and accuracy, judged like the fitted
    parameters (float32: torch's float64 run evaluated in float64 as the exact one)."""
    v = free_runs(run)
    j = fitted_model(run, *run.cand.fitted_model(v["jax_state"], *_eval_rows(run)))
    t = _reference_model(run, v["torch_arrays"])
    members = [_reference_model(run, a) for a in v["member_arrays"]]
    # MKL's COMPATIBLE path moved a correct lstm port's fitted predictions to 1.32 of
    # the ensemble's per-entry bound: float32 falls back on the error against float64
    exact = _reference_model(run, v["member_arrays"][-1], "float64") if run.dtype == "float32" else None
    criterion.judge_fitted(_checker(run, 7), j, t, members, v["horizon"] < v["steps"], run.dtype, "fitted model",
                           exact)


RUNGS = {6: rung6_free_running, 7: rung7_fitted_model}
