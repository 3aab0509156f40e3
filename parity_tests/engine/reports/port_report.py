"""check_port's result: the verdict, the first failure and a markdown table of every
comparison (the columns of docs/parity-cpu.md's tables)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from parity_tests.engine import parity


def _fmt(x) -> str:
    return f"{x:.2e}" if np.isfinite(x) else "inf"


@dataclass
class PortReport:
    passed: bool
    first_failure: dict | None
    rows: list                                   # parity.Row, in the order compared
    settings: dict
    horizon: int | None = None
    steps: int = 0
    failures: list = field(default_factory=list)  # every failed comparison, first per quantity
    located: dict | None = None                  # locate_divergence's answer when the port failed
    seconds: float = 0.0

    def markdown(self) -> str:
        s = self.settings
        out = [f"## Parity of {s['model']}: {'PASSED' if self.passed else 'FAILED'}", "",
               f"{s['dtype']}, loss {s['loss']}, {s['optimizer']}, {s['steps']} steps of batch {s['batch_size']} "
               f"on {s['rows']} rows, device {s['device']}; "
               + (f"free-run horizon: step {self.horizon} of {self.steps}" if self.horizon is not None else "")
               + ("" if self.horizon is None or self.horizon < self.steps else " (never: judged per step to the end)")
               + ("; " if self.horizon is not None else "") + f"{self.seconds:.1f} s.", ""]
        if self.first_failure:
            f = self.first_failure
            out += [f"First failure: rung {f['rung']} ({f['rung_name']}), {f['quantity']}"
                    + (f", step {f['step']}" if f.get("step") is not None else "")
                    + (f", layer `{f['layer']}`" if f.get("layer") else "")
                    + (f" ({f['entry']})" if f.get("entry") and f.get("entry") != f.get("layer") else "") + ".", ""]
        if self.located and not self.located.get("layer"):
            out += [f"Not located: {self.located.get('note', 'no module differs')}.", ""]
        elif self.located:
            loc = self.located
            out += [f"Located: the {loc['quantity']} of `{loc['layer']}` differs first"
                    + (" (found in float64)" if loc.get("dtype") else "")
                    + f" (max abs {_fmt(loc['max_abs'])}, max rel {_fmt(loc['max_rel'])})"
                    + (f"; {loc['note']}" if loc.get("note") else "") + ".", ""]
        out += rows_table(self.rows)
        out += ["", "*used* is the largest |NNX - torch| / allowed of the comparison (over every step for "
                "rung 5); rungs 6-7 are judged against an ensemble of torch runs moved one ulp per update "
                "(parity_tests/engine/bounds/criterion.py)."]
        return "\n".join(out)


def table_head(*columns: str) -> list[str]:
    """A markdown table's header and separator lines (every report's tables)."""
    return [table_row(*columns), "|" + " --- |" * len(columns)]


def table_row(*cells) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def rows_table(rows) -> list[str]:
    """The comparisons as a markdown table: check_port's report and `compare` print this."""
    return table_head("rung", "quantity", "max abs", "max rel", "tolerance", "used", "ok") + [
        table_row(f"{r.rung} {parity.RUNG_NAMES.get(r.rung, '')}", r.quantity, _fmt(r.max_abs), _fmt(r.max_rel),
                  r.tolerance, f"{r.used:.2f}", "yes" if r.passed else "**NO**") for r in rows]
