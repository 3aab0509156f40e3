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
    if parity.recording_for_the_report():
        parity.keep_curve((cell.example, cell.form, cell.dtype, cell.device, run.label), verdict)
    return verdict


def rung6_free_running(cell: Cell, run: Run | None = None) -> dict:
    """Per-step losses up to the horizon; after it, the run's loss statistics and the
    fitted parameters as one more draw of the ensemble (the whole run per entry when
    the ensemble never spreads)."""
    run = run or default_run(cell.example)
    v = free_run_verdict(cell, run)
    t, j, h, noise = v["torch"], v["jax"], v["horizon"], v["noise"]
    kw = dict(where=cell.where(run), rung=6)
    check(j.step_losses[:h], t.step_losses[:h], step_axis=True, tol=criterion.predictable_bound(
        v["spread"][:h], t.step_losses[:h], cell.dtype),
        quantity=f"per-step losses before the horizon (step {h} of {v['steps']})", **kw)
    if h == v["steps"]:                # never chaotic: the fitted parameters entry by entry
        param_spread = {n: criterion.spread([p[n] for p in noise["params"]], t.params[n]) for n in t.params}
        allowed = {n: criterion.per_step_allowed(param_spread[n], t.params[n], cell.dtype, tensorwise=True)
                   for n in t.params}
        check(j.params, t.params, quantity="fitted parameters (run never chaotic)",
              tol=criterion.Bound(allowed, "per entry, as the per-step losses, relative to the largest entry"), **kw)
        return v
    for name, stat in (("final step loss", lambda r: float(r[-1])), ("median loss, last tenth", criterion.tail_median)):
        centre, bound = criterion.scalar_bound(stat(t.step_losses), [stat(r) for r in noise["step_losses"]])
        check(stat(j.step_losses), centre, quantity=f"{name} (after horizon)", tol=bound, **kw)
    members = [criterion.rms(criterion.flat(p), criterion.flat(t.params)) for p in noise["params"]]
    check(criterion.rms(criterion.flat(j.params), criterion.flat(t.params)), 0.0, tol=criterion.distance_bound(members),
          quantity="fitted parameters: RMS distance from torch (after horizon)", **kw)
    return v


def rung7_fitted_model(cell: Cell, run: Run | None = None) -> None:
    """Final loss, predictions on a grid and accuracy of the fitted model; entry by entry
    when the run never turned chaotic, else as one more draw of the ensemble."""
    run = run or default_run(cell.example)
    v = free_run_verdict(cell, run)
    t = fitted_model(tt, cell, v["torch"].params, run)
    j = fitted_model(jt, cell, v["jax"].params, run)
    members = v["noise"]["models"]
    kw = dict(where=cell.where(run), rung=7)
    for q in t:
        if v["horizon"] == v["steps"]:
            noise = criterion.spread([m[q] for m in members], t[q])
            check(j[q], t[q], quantity=q, tol=criterion.Bound(
                criterion.per_step_allowed(noise, t[q], cell.dtype, tensorwise=True),
                "per entry, as the per-step losses, relative to the largest entry"), **kw)
        elif np.ndim(t[q]) == 0:
            centre, bound = criterion.scalar_bound(float(t[q]), [float(m[q]) for m in members])
            check(float(j[q]), centre, quantity=f"{q} (ensemble range)", tol=bound, **kw)
        else:
            dist = [criterion.rms(m[q], t[q]) for m in members]
            check(criterion.rms(j[q], t[q]), 0.0, quantity=f"{q}: RMS distance from torch",
                  tol=criterion.distance_bound(dist), **kw)
