"""The deep examples' ladder as one verdict, for `python -m examples compare cnn|lstm|gru`:
rungs 2-5 (parity_tests/engine/rungs/deep_ladder.py) and 6-7 (deep_free_run.py) of one run."""
from __future__ import annotations

from parity_tests.engine.rungs import deep_free_run
from parity_tests.engine.rungs import deep_ladder
from parity_tests.engine.rungs.gate import Verdict, run_rungs

RUNGS = {**deep_ladder.RUNGS, 6: deep_free_run.rung6_free_running, 7: deep_free_run.rung7_fitted_model}


def judge(cell: deep_ladder.DeepCell, run: deep_ladder.DeepRun, progress=True) -> Verdict:
    records, failures = run_rungs(RUNGS, cell, run, progress)
    steps = len(deep_free_run.fit_run("torch", cell, run).step_losses)
    return Verdict(agree=not failures, rows=list(records.rows.values()), failures=failures, horizon=steps, steps=steps)
