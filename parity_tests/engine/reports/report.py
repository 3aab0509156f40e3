"""The parity report: `JAXPORT_REPORT=docs/parity-cpu.md pytest parity_tests` writes it at
the end of the session (conftest.pytest_sessionfinish). On a machine where the GPU cells
ran, a "cpu" in the file name becomes "gpu", so the same `make report` writes
docs/parity-gpu.md. Plots go to images/<report name>-<example>-<device>-float32.png
beside the report, so the CPU and GPU reports never overwrite each other's."""
from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np

from parity_tests.engine import parity
from parity_tests.engine.reports import report_free_runs
from parity_tests.engine.reports.port_report import table_head, table_row


def _fmt(x: float) -> str:
    return "0" if x == 0 else ("inf" if not np.isfinite(x) else f"{x:.2e}")


def write(target: str, gpu: bool, record: parity.Record) -> Path:
    path = Path(target)
    if gpu and "cpu" in path.name:
        path = path.with_name(path.name.replace("cpu", "gpu"))
    path.parent.mkdir(parents=True, exist_ok=True)
    facts = record.facts
    v, rows = facts["versions"], list(record.rows.values())
    out = [f"# Parity report: {'GPU' if gpu else 'CPU'}", "",
           f"Written by `JAXPORT_REPORT={target} pytest -q parity_tests` (`make report`) on "
           f"{datetime.date.today().isoformat()}. Every number below is a comparison of jaxport "
           "(JAX + Flax NNX + Optax) with the torch reference made by the suite's one helper, "
           "`parity_tests/engine/parity.py:check`; docs/design.md's parity ladder is the spec.", "",
           "## Environment", "", "| | |", "| --- | --- |"]
    out += [table_row(key, v[key]) for key in ("python", "torch", "jax", "jaxlib", "flax", "optax", "numpy")]
    out += [table_row(f"device `{device}`", name) for device, name in v["devices"].items()]
    out += [f"| pinned numerics | {v['pinned']} |", ""]
    o = facts.get("outcomes", {})
    out += ["## Outcome", "",
            f"{o.get('passed', 0)} passed, {o.get('failed', 0)} failed, {o.get('skipped', 0)} skipped "
            f"in {facts.get('seconds', 0):.0f} s (the whole `parity_tests` directory)."]
    out += [f"- skipped {n}: {reason}" for reason, n in facts.get("skips", {}).items()]
    out += [f"- FAILED: `{f}`" for f in facts.get("failures", [])]
    out += ["", f"{len(rows)} comparisons recorded, {sum(not r.passed for r in rows)} outside tolerance.", ""]
    out += ["## Tolerances (one table: `parity_tests/engine/parity.py`)", "",
            *table_head("dtype", "rungs", "allowed \\|jaxport - torch\\| (elementwise)"),
            f"| float64 | 1-5 (single computations) | {parity.FLOAT64}: atol + rtol x \\|torch\\| "
            "(the atol only matters for entries below 1e-2: sums that cancel, e.g. a converged "
            "gradient) |",
            "| float32 | 1 | exact or torch.testing's defaults (the inputs) |",
            "| float32 | 2-5 (single computations) | the measured step bound, then the error against "
            "torch's float64 step (`step_noise.py`, `port_exact.py`, below) |",
            "| both | 6-7 (whole runs) | the free-run criterion below (`criterion.py`) |",
            "| both | checks of a backend against itself, marked (self) | exact |", "",
            "*max rel* is elementwise \\|diff\\| / \\|torch\\|, so an entry that is ~0 in torch "
            "(a converged gradient, a subnormal that XLA flushes to zero) shows a large rel at a "
            "negligible absolute difference. *norm rel* is the largest \\|diff\\| of a tensor "
            "(at a step) over its largest \\|torch\\|. "
            "*used* is the largest \\|diff\\| / allowed: 1 would be the edge of the tolerance.", ""]
    out += report_free_runs.section(path, record.curves)
    out += _planted_section(facts)
    out += _summary_section(rows)
    out += ["## Every comparison", "", *table_head("example", "form", "dtype", "device", "config", "rung", "quantity",
                                                    "max abs", "max rel", "norm rel", "tolerance", "used", "worst at",
                                                    "pass", "test")]
    out += [table_row(r.example, r.form, r.dtype, r.device, r.config, r.rung, r.quantity, _fmt(r.max_abs),
                      _fmt(r.max_rel), _fmt(r.norm_rel), r.tolerance, f"{r.used:.2g}", r.worst,
                      "yes" if r.passed else "**NO**", f"`{r.test.split('[')[0]}`") for r in sorted(rows, key=_order)]
    path.write_text("\n".join(out) + "\n")
    return path


def _order(r):
    return (r.device, r.example, r.form, r.dtype, r.config != "default", r.config, str(r.rung), r.quantity)


def _planted_section(facts: dict) -> list:
    planted = facts.get("planted", [])
    if not planted:
        return []
    out = ["## Planted bugs (`test_planted_bugs_are_caught`)", "",
           "Each bug is monkeypatched into jaxport (class form, CPU); the ladder's rungs run in "
           "order until one raises the parity helper's error (the BCE bug: all of them).", "",
           *table_head("bug", "dtype", "example", "rungs passed", "caught by", "the failure")]
    for bug, dtype, found in planted:
        for example, results in found.items():
            passed = ", ".join(str(r) for r, e in results if e is None) or "-"
            caught = [(r, e) for r, e in results if e]
            first = caught[0][1].split(": ", 1)[-1][:260].replace("|", "\\|") if caught else ""
            out.append(table_row(bug, dtype, example, passed, ", ".join(str(r) for r, _ in caught) or "**nothing**",
                                 first))
    return out + [""]


def _summary_section(rows) -> list:
    out = ["## Summary: worst difference per example, dtype and rung (default configuration)", "",
           *table_head("example", "form", "dtype", "device", "rung", "max abs", "max rel", "norm rel", "used", "pass")]
    groups = {}
    for r in rows:
        if r.config == "default" and not r.quantity.startswith("(self)") and isinstance(r.rung, int):
            groups.setdefault((r.device, r.example, r.form, r.dtype, r.rung), []).append(r)
    for key in sorted(groups):
        g = groups[key]
        out.append(table_row(key[1], key[2], key[3], key[0], f"{key[4]} {parity.RUNG_NAMES[key[4]]}",
                             *(_fmt(max(getattr(r, q) for r in g)) for q in ("max_abs", "max_rel", "norm_rel")),
                             f"{max(r.used for r in g):.2g}", "yes" if all(r.passed for r in g) else "**NO**"))
    return out + [""]
