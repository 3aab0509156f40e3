"""The parity report: `JAXPORT_REPORT=docs/parity-cpu.md pytest parity_tests` writes it at
the end of the session (conftest.pytest_sessionfinish). On a machine where the GPU cells
ran, a "cpu" in the file name becomes "gpu", so the same `make report` writes
docs/parity-gpu.md. Plots go to images/<report name>-<example>-<device>-float32.png
beside the report, so the CPU and GPU reports never overwrite each other's."""
from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np

import parity
from parity import CURVES, RECORDS, RUNG_NAMES, SESSION


def _fmt(x: float) -> str:
    return "0" if x == 0 else ("inf" if not np.isfinite(x) else f"{x:.2e}")


def _plot(path: Path, example: str, device: str, curves: dict) -> None:
    """Per-step |loss diff| as dots (zeros cannot be drawn on a log axis: left out), its
    running maximum as a line, against the envelope (itself a running maximum)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 4.8))
    colors = {"class": "tab:blue", "sequential": "tab:orange"}
    same = len(curves) > 1 and all(np.array_equal(c.diff, curves["class"].diff) for c in curves.values())
    shown = {"class": curves["class"]} if same and "class" in curves else curves
    base = next(iter(shown.values()))
    steps = np.arange(len(base.diff))
    for i, run in enumerate(base.runs):
        ax.plot(steps[run > 0], run[run > 0], ".", ms=1.5, color="0.65",
                label="torch vs torch, initial weights 1 ulp away (3 runs)" if i == 0 else None)
    ax.plot(steps, base.envelope, color="k", lw=1.8, label="noise envelope: running max of those")
    ax.plot(steps, base.bound, color="tab:red", lw=1.2, ls="--",
            label=f"bound: max({parity.ENVELOPE_MULTIPLE:g} x envelope, float32 single-step tol)")
    for form, c in shown.items():
        name = "class = sequential, identical" if same else form
        ax.plot(steps[c.diff > 0], c.diff[c.diff > 0], ".", ms=2.5, color=colors.get(form, "tab:green"),
                label=f"jaxport vs torch per step ({name})")
        ax.plot(steps, np.maximum.accumulate(c.diff), color=colors.get(form, "tab:green"), lw=1.2,
                label=f"jaxport vs torch, running max ({name})")
    positive = np.concatenate([c.diff[c.diff > 0] for c in shown.values()] +
                              [r[r > 0] for r in base.runs] + [base.bound])
    ax.set_ylim(positive.min() / 3, base.bound.max() * 3)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("|loss difference| (zeros not drawn)")
    ax.set_title(f"{example}, float32, {device}: free-running per-step loss, jaxport vs torch")
    ax.legend(fontsize=7.5, loc="best", framealpha=0.9)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(target: str, gpu: bool) -> Path:
    path = Path(target)
    if gpu and "cpu" in path.name:
        path = path.with_name(path.name.replace("cpu", "gpu"))
    path.parent.mkdir(parents=True, exist_ok=True)
    v, rows = SESSION["versions"], list(RECORDS.values())
    out = [f"# Parity report: {'GPU' if gpu else 'CPU'}", "",
           f"Written by `JAXPORT_REPORT={target} pytest -q parity_tests` (`make report`) on "
           f"{datetime.date.today().isoformat()}. Every number below is a comparison of jaxport "
           "(JAX + Flax NNX + Optax) with the torch reference made by the suite's one helper, "
           "`parity_tests/parity.py:check`; DESIGN.md's parity ladder is the spec.", "",
           "## Environment", "", "| | |", "| --- | --- |"]
    for key in ("python", "torch", "jax", "jaxlib", "flax", "optax", "numpy"):
        out.append(f"| {key} | {v[key]} |")
    for device, name in v["devices"].items():
        out.append(f"| device `{device}` | {name} |")
    out += [f"| pinned numerics | {v['pinned']} |", ""]
    o = SESSION.get("outcomes", {})
    out += ["## Outcome", "",
            f"{o.get('passed', 0)} passed, {o.get('failed', 0)} failed, {o.get('skipped', 0)} skipped "
            f"in {SESSION.get('seconds', 0):.0f} s (the whole `parity_tests` directory)."]
    out += [f"- skipped {n}: {reason}" for reason, n in SESSION.get("skips", {}).items()]
    out += [f"- FAILED: `{f}`" for f in SESSION.get("failures", [])]
    failed_rows = [r for r in rows if not r.passed]
    out += ["", f"{len(rows)} comparisons recorded, {len(failed_rows)} outside tolerance.", ""]
    out += ["## Tolerances (one table: `parity_tests/parity.py`)", "",
            "| dtype | rungs | allowed \\|jaxport - torch\\| (elementwise) |", "| --- | --- | --- |",
            f"| float64 | 1-7, whole free run included | {parity.FLOAT64}: atol + rtol x \\|torch\\| "
            "(the atol only matters for entries below 1e-2: sums that cancel, e.g. a converged "
            "gradient) |",
            f"| float32 | 1-5 (single computations) | {parity.FLOAT32}: atol + rtol x \\|torch\\| "
            "(torch.testing's defaults) |",
            f"| float32 | 6-7 (whole runs) | max({parity.ENVELOPE_MULTIPLE:g} x measured noise envelope, "
            f"the float32 single-computation bound) |",
            "| both | checks of a backend against itself, marked (self) | exact |", "",
            "*max rel* is elementwise \\|diff\\| / \\|torch\\|, so an entry that is ~0 in torch "
            "(a converged gradient, a subnormal that XLA flushes to zero) shows a large rel at a "
            "negligible absolute difference. *norm rel* is the largest \\|diff\\| of a tensor "
            "(at a step) over its largest \\|torch\\|. "
            "*used* is the largest \\|diff\\| / allowed: 1 would be the edge of the tolerance.", ""]
    out += _envelope_section(path)
    out += _planted_section() + _kink_section()
    out += _summary_section(rows)
    out += ["## Every comparison", "",
            "| example | form | dtype | device | config | rung | quantity | max abs | max rel | norm rel "
            "| tolerance | used | worst at | pass | test |", "| " + " | ".join(["---"] * 15) + " |"]
    for r in sorted(rows, key=_order):
        out.append(f"| {r.example} | {r.form} | {r.dtype} | {r.device} | {r.config} | {r.rung} | {r.quantity} "
                   f"| {_fmt(r.max_abs)} | {_fmt(r.max_rel)} | {_fmt(r.norm_rel)} | {r.tolerance} "
                   f"| {r.used:.2g} | {r.worst} "
                   f"| {'yes' if r.passed else '**NO**'} | `{r.test.split('[')[0]}` |")
    path.write_text("\n".join(out) + "\n")
    return path


def _order(r):
    return (r.device, r.example, r.form, r.dtype, r.config != "default", r.config, str(r.rung), r.quantity)


def _envelope_section(path: Path) -> list:
    out = ["## float32 free runs against the measured noise envelope (rung 6)", "",
           f"The envelope: torch against itself with every initial weight moved by one float32 ulp "
           f"({parity.ENVELOPE_RUNS} runs: all up, all down, random directions), running maximum "
           f"over steps of \\|loss difference\\|. jaxport must stay within "
           f"{parity.ENVELOPE_MULTIPLE:g}x of it at every step, and never needs to beat the float32 "
           "single-computation tolerance (the floor that guards the first steps, where the envelope "
           "is still 0).", "",
           "| example | form | device | config | steps | envelope at step 10 | envelope peak "
           "| jaxport max \\|diff\\| | jaxport / envelope (max, where > 0) | used of bound |",
           "| " + " | ".join(["---"] * 10) + " |"]
    by_plot = {}
    for (example, form, device, config), c in sorted(CURVES.items()):
        positive = c.envelope > 0
        ratio = f"{np.max(c.diff[positive] / c.envelope[positive]):.2f}" if positive.any() else "(envelope 0)"
        out.append(f"| {example} | {form} | {device} | {config} | {len(c.diff)} "
                   f"| {_fmt(c.envelope[min(10, len(c.diff) - 1)])} | {_fmt(c.envelope.max())} "
                   f"| {_fmt(c.diff.max())} | {ratio} "
                   f"| {np.max(c.diff / c.bound):.2f} |")
        if config == "default":
            by_plot.setdefault((example, device), {})[form] = c
    out.append("")
    for (example, device), curves in by_plot.items():
        image = path.parent / "images" / f"{path.stem}-{example}-{device}-float32.png"
        _plot(image, example, device, curves)
        out += [f"![{example} float32 {device}](images/{image.name})", ""]
    return out


def _planted_section() -> list:
    planted = SESSION.get("planted", [])
    if not planted:
        return []
    out = ["## Planted bugs (`test_planted_bugs_are_caught`)", "",
           "Each bug is monkeypatched into jaxport (class form, CPU); the ladder's rungs run in "
           "order until one raises the parity helper's error (the BCE bug: all of them).", "",
           "| bug | dtype | example | rungs passed | caught by | the failure |", "| --- | --- | --- | --- | --- | --- |"]
    for bug, dtype, found in planted:
        for example, results in found.items():
            passed = ", ".join(str(r) for r, e in results if e is None) or "-"
            caught = [(r, e) for r, e in results if e]
            first = caught[0][1].split(": ", 1)[-1][:260].replace("|", "\\|") if caught else ""
            out.append(f"| {bug} | {dtype} | {example} | {passed} | "
                       f"{', '.join(str(r) for r, _ in caught) or '**nothing**'} | {first} |")
    return out + [""]


def _kink_section() -> list:
    kinks = SESSION.get("kinks", [])
    out = ["## ReLU kinks float32 cannot decide", "",
           "Where a hidden pre-activation lies within float32's dot-product rounding bound of 0, "
           "whether that sample passes the ReLU is down to summation order, and the two backends "
           "may legitimately disagree on a whole sample's share of a gradient. Such a step passes "
           "only if a float64 torch step, with those kinks decided one way or the other, agrees "
           "with jaxport to the float32 tolerance (`teacher.kink_referee`).", ""]
    if not kinks:
        return out + ["None occurred in this session.", ""]
    out += ["| cell | config | rung | step | kinks (hidden layer from 0, sample, unit) | decided (+: passes "
            "the ReLU) | torch vs jaxport before |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for k in kinks:
        decided = ", ".join("+" if s > 0 else "-" for s in k["signs"])
        error = k["error"].split(": ", 1)[-1][:200].replace("|", "\\|")
        out.append(f"| {k['cell']} | {k['config']} | {k['rung']} | {k['step']} | {k['kinks']} | {decided} | {error} |")
    return out + [""]


def _summary_section(rows) -> list:
    out = ["## Summary: worst difference per example, dtype and rung (default configuration)", "",
           "| example | form | dtype | device | rung | max abs | max rel | norm rel | used | pass |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    groups = {}
    for r in rows:
        if r.config == "default" and not r.quantity.startswith("(self)") and isinstance(r.rung, int):
            groups.setdefault((r.device, r.example, r.form, r.dtype, r.rung), []).append(r)
    for key in sorted(groups):
        g = groups[key]
        out.append(f"| {key[1]} | {key[2]} | {key[3]} | {key[0]} | {key[4]} {RUNG_NAMES[key[4]]} "
                   f"| {_fmt(max(r.max_abs for r in g))} | {_fmt(max(r.max_rel for r in g))} "
                   f"| {_fmt(max(r.norm_rel for r in g))} "
                   f"| {max(r.used for r in g):.2g} | {'yes' if all(r.passed for r in g) else '**NO**'} |")
    return out + [""]
