"""The ladder as one verdict, for `python -m examples compare` (and anyone who wants the
suite's judgement of one configuration outside pytest): rungs 2-7 of one cell and run,
every comparison recorded, and the horizon and the reference's own spread.

Exit-status semantics are the caller's: `verdict.agree` is False as soon as any rung
raised a ParityError (a bug that only one step shows fails the whole verdict).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

from parity_tests.engine.rungs import ladder

from parity_tests.engine import parity
from parity_tests.engine.reports.port_report import rows_table

RUNGS = (2, 3, 4, 5, 6, 7)


@dataclass
class Verdict:
    agree: bool
    rows: list                        # parity.Row, in the order compared
    failures: list = field(default_factory=list)   # (rung, message)
    horizon: int = 0
    steps: int = 0
    spread_final: float = 0.0         # the ensemble's largest |member - torch| of the last step's loss
    diff_final: float = 0.0           # |jaxport - torch| of the last step's loss


def run_rungs(rungs: dict, cell, run, progress=True) -> tuple[parity.Record, list]:
    """Every rung of `rungs` ({number: function(cell, run)}), a failure not stopping the
    next, into a scratch record (a compare stays out of the report): (record, failures)."""
    failures = []
    with parity.recording() as records:
        for rung, fn in rungs.items():
            if progress:
                print(f"compare: rung {rung} ({parity.RUNG_NAMES[rung]}) ...", file=sys.stderr, flush=True)
            try:
                fn(cell, run)
            except parity.ParityError as error:
                failures.append((rung, str(error)))
    return records, failures


def judge(cell: ladder.Cell, run: ladder.Run, progress=True) -> Verdict:
    records, failures = run_rungs({rung: ladder.LADDER[rung] for rung in RUNGS}, cell, run, progress)
    with parity.recording():
        v = ladder.free_run_verdict(cell, run)        # cached by the rungs; kept out of the report
    return Verdict(agree=not failures, rows=list(records.rows.values()), failures=failures,
                   horizon=v["horizon"], steps=v["steps"],
                   spread_final=float(v["spread"][-1]) if v["steps"] else 0.0,
                   diff_final=float(v["diff"][-1]) if v["steps"] else 0.0)


def table(verdict: Verdict) -> list[str]:
    """The comparisons as check_port's report shows them (port_report.rows_table), less
    the ladder's self-checks of one backend."""
    return rows_table([r for r in verdict.rows if not str(r.quantity).startswith("(self)")])
