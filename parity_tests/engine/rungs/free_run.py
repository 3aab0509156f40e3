"""The ladder's free-running rungs (6: the whole run, 7: the fitted model), judged by the
portable criterion of criterion.py against the torch ensemble of ensemble.py."""
from __future__ import annotations

import numpy as np

from parity_tests.engine.bounds import criterion
import jaxport.training as jt
from parity_tests.engine import parity
import torchref.training as tt
from parity_tests.engine.parity import check
from parity_tests.engine.sides.runs import Cell, Run, default_run, fitted_model, jax_fit, reference_noise, torch_fit


def free_run_verdict(cell: Cell, run: Run) -> dict:
    """Rungs 6 and 7 by the portable criterion (parity_tests/engine/bounds/criterion.py): jaxport's run
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


def _judge_fitted(j: dict, t: dict, members: list, chaotic: bool, dtype: str, quantity: str, kw: dict) -> None:
    """criterion.judge_fitted (the port harness judges the same way) with this cell's
    `where` and rung."""
    criterion.judge_fitted(lambda a, e, entry=None, **c: check(a, e, **c, **kw), j, t, members, chaotic, dtype,
                           quantity)


def rung6_free_running(cell: Cell, run: Run | None = None) -> dict:
    """Per-step losses up to the horizon; after it, the run's loss statistics. The fitted
    parameters entry by entry while neither the run nor the ensemble's spread of a
    tensor has left the single-step tolerance, else as one more draw of the ensemble
    (criterion.judge_losses and judge_fitted, which the port harness calls too)."""
    run = run or default_run(cell.example)
    v = free_run_verdict(cell, run)
    t, j, noise = v["torch"], v["jax"], v["noise"]
    kw = dict(where=cell.where(run), rung=6)
    h = criterion.judge_losses(lambda a, e, **c: check(a, e, **c, **kw), j.step_losses, t.step_losses,
                               noise["step_losses"], cell.dtype)
    assert h == v["horizon"]
    _judge_fitted(j.params, t.params, noise["params"], h < v["steps"], cell.dtype, "fitted parameters", kw)
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
