"""The deep examples' ladder as one verdict, for `python -m examples compare cnn|lstm|gru`:
rungs 2-5 (parity_tests/deep_ladder.py) and 6-7 (deep_free_run.py) of one run."""
from __future__ import annotations

import sys

import deep_free_run
import deep_ladder
import parity
from gate import Verdict

RUNGS = {**deep_ladder.RUNGS, 6: deep_free_run.rung6_free_running, 7: deep_free_run.rung7_fitted_model}


def judge(cell: deep_ladder.DeepCell, run: deep_ladder.DeepRun, progress=True) -> Verdict:
    failures = []
    with parity.recording() as records:
        for rung, fn in RUNGS.items():
            if progress:
                print(f"compare: rung {rung} ({parity.RUNG_NAMES[rung]}) ...", file=sys.stderr, flush=True)
            try:
                fn(cell, run)
            except parity.ParityError as error:
                failures.append((rung, str(error)))
    steps = len(deep_free_run.fit_run("torch", cell, run).step_losses)
    return Verdict(agree=not failures, rows=list(records.rows.values()), failures=failures, horizon=steps, steps=steps)
