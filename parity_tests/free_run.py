"""The ladder's free-running rungs (6: the whole run, 7: the fitted model), judged by the
portable criterion of criterion.py against the torch ensemble of ensemble.py."""
from __future__ import annotations

import numpy as np

import criterion
import jaxport.training as jt
import parity
import torchref.training as tt
from parity import check
from runs import Cell, Run, default_run, fitted_model, jax_fit, reference_noise, torch_fit


def free_run_verdict(cell: Cell, run: Run) -> dict:
    """Rungs 6 and 7 by the portable criterion (parity_tests/criterion.py): jaxport's run
    against torch's, with the torch ensemble as the yardstick. Returns what the report
    and `compare` show: the horizon, the per-step numbers and each statistic."""
    t, j = torch_fit(cell, run), jax_fit(cell, run)
    noise = reference_noise(cell, run)
    step_spread = criterion.spread(noise["step_losses"], t.step_losses)
    h = criterion.horizon(step_spread, t.step_losses, cell.dtype)
    verdict = dict(horizon=h, steps=len(t.step_losses), spread=step_spread, torch=t, jax=j, noise=noise,
                   diff=np.abs(j.step_losses.astype(np.float64) - t.step_losses))
    verdict["allowed"] = criterion.per_step_allowed(step_spread, t.step_losses, cell.dtype)
    if parity.report_record():
        parity.report_record().curves[(cell.example, cell.form, cell.dtype, cell.device, run.label)] = verdict
    return verdict


def _spread_past_tolerance(spread, reference, dtype: str) -> bool:
    """Has the ensemble itself left the single-step tolerance of this quantity (relative
    to the tensor's largest entry)? A fitted tensor can pass its own horizon while the
    loss has not: 100 steps of rounding move a weight more than one step's tolerance."""
    ref = np.abs(np.asarray(reference, np.float64))
    return bool(np.any(np.asarray(spread) > criterion.LOSS_TOL[dtype].allowed(ref.max() if ref.size else 0.0)))


def _judge_fitted(j: dict, t: dict, members: list, chaotic: bool, dtype: str, quantity: str, kw: dict) -> None:
    """Each tensor of a fitted quantity: entry by entry where neither the run nor the
    ensemble's spread of that tensor has left the single-step tolerance, else by RMS
    distance from torch against the members' (one more draw of the ensemble)."""
    for name in t:
        spread = criterion.spread([m[name] for m in members], t[name])
        if not chaotic and not _spread_past_tolerance(spread, t[name], dtype):
            check(j[name], t[name], quantity=f"{quantity}: {name}", tol=criterion.Bound(
                criterion.per_step_allowed(spread, t[name], dtype, tensorwise=True),
                "per entry, as the per-step losses, relative to the largest entry"), **kw)
        elif np.ndim(t[name]) == 0:
            centre, bound = criterion.scalar_bound(float(t[name]), [float(m[name]) for m in members])
            check(float(j[name]), centre, quantity=f"{quantity}: {name} (ensemble range)", tol=bound, **kw)
        else:
            dist = [criterion.rms(m[name], t[name]) for m in members]
            check(criterion.rms(j[name], t[name]), 0.0, quantity=f"{quantity}: {name}, RMS distance from torch",
                  tol=criterion.distance_bound(dist), **kw)


def rung6_free_running(cell: Cell, run: Run | None = None) -> dict:
    """Per-step losses up to the horizon; after it, the run's loss statistics. The fitted
    parameters entry by entry while neither the run nor the ensemble's spread of a
    tensor has left the single-step tolerance, else as one more draw of the ensemble."""
    run = run or default_run(cell.example)
    v = free_run_verdict(cell, run)
    t, j, h, noise = v["torch"], v["jax"], v["horizon"], v["noise"]
    kw = dict(where=cell.where(run), rung=6)
    check(j.step_losses[:h], t.step_losses[:h], step_axis=True, tol=criterion.predictable_bound(
        v["spread"][:h], t.step_losses[:h], cell.dtype),
        quantity=f"per-step losses before the horizon (step {h} of {v['steps']})", **kw)
    chaotic = h < v["steps"]
    if chaotic:
        for name, stat in (("final step loss", lambda r: float(r[-1])), ("median loss, last tenth", criterion.tail_median)):
            centre, bound = criterion.scalar_bound(stat(t.step_losses), [stat(r) for r in noise["step_losses"]])
            check(stat(j.step_losses), centre, quantity=f"{name} (after horizon)", tol=bound, **kw)
    _judge_fitted(j.params, t.params, noise["params"], chaotic, cell.dtype, "fitted parameters", kw)
    return v


def rung7_fitted_model(cell: Cell, run: Run | None = None) -> None:
    """Final loss, predictions on a grid and accuracy of the fitted model, judged like the
    fitted parameters."""
    run = run or default_run(cell.example)
    v = free_run_verdict(cell, run)
    t = fitted_model(tt, cell, v["torch"].params, run)
    j = fitted_model(jt, cell, v["jax"].params, run)
    _judge_fitted(j, t, v["noise"]["models"], v["horizon"] < v["steps"], cell.dtype, "fitted model",
                  dict(where=cell.where(run), rung=7))
