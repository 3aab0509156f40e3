"""The parity suite's one tolerance table, its one comparison helper, and the record
of every comparison (which `make report` turns into docs/parity-<device>.md).

Every number the suite compares goes through `check`: max absolute and relative
difference, NaN masks, first failing parameter and step, and a `ParityError` (an
AssertionError) that names example, form, dtype, device, configuration, rung,
quantity, parameter and step.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np


class ParityError(AssertionError):
    """A comparison outside its tolerance (planted-bug tests catch exactly this)."""


@dataclass(frozen=True)
class Tol:
    """|actual - expected| <= atol + rtol * |expected|, elementwise (torch.testing's rule)."""
    rtol: float
    atol: float

    def allowed(self, expected, name=None, step_axis=False):
        return self.atol + self.rtol * np.abs(expected)

    def __str__(self):
        return "exact" if self.rtol == self.atol == 0 else f"rtol {self.rtol:.2g}, atol {self.atol:.2g}"


# ---- THE tolerance table (docs/design.md, "The parity ladder") ----------------------
# float64: relative 1e-10 at every rung, the whole free run included. A pure relative
# bound cannot hold for entries that are sums cancelling to ~0 (the gradient of a
# converged bias is ~1e-6, made of O(1) residuals, and differs by 1.4e-16 = 1.1e-10
# relative between the backends): their error is set by the summands, not the result.
# atol 1e-12 is 1e-10 relative to a summand scale of 1e-2 (these examples' terms are
# 1e-2..1e2), and still ~1e4 float64 roundings of an O(1) term. (torch.testing's float64
# defaults are rtol 1e-7, atol 1e-7.)
FLOAT64 = Tol(rtol=1e-10, atol=1e-12)
# float32 single computations (rungs 2-5): torch.testing.assert_close's float32 defaults.
FLOAT32 = Tol(rtol=1.3e-6, atol=1e-5)
# Rung 1 (the inputs) and self-consistency checks of one backend: bit for bit.
EXACT = Tol(rtol=0.0, atol=0.0)
# Single computations (rungs 1-5) only: whole runs (rungs 6 and 7) are not judged by a
# fixed tolerance (criterion.py).
TOLERANCES = {"float64": FLOAT64, "float32": FLOAT32}


@dataclass
class Row:
    example: str
    form: str
    dtype: str
    device: str
    config: str
    rung: object          # 1-7, or a name ("bce")
    quantity: str
    max_abs: float
    max_rel: float
    tolerance: str
    passed: bool
    worst: str = ""       # parameter (and step) with the largest |diff| / allowed
    used: float = 0.0     # that largest |diff| / allowed: the fraction of the tolerance used
    norm_rel: float = 0.0  # max |diff| / max |torch| per tensor (per step), over tensors
    test: str = ""


class Record:
    """What a run of the ladder found: its comparisons (one Row per quantity, repeated
    comparisons at other steps merged in), its free-run verdicts, and facts for the
    report. The suite's is a session fixture (conftest.py); `compare` and the planted-bug
    tests record into scratch ones, which keeps them out of the report."""

    def __init__(self, for_report: bool = False):
        self.rows: dict[tuple, Row] = {}
        self.curves: dict[tuple, object] = {}   # (example, form, dtype, device, config) -> free-run verdict
        self.facts: dict = {}                   # versions, outcomes, planted bugs, kinks, seconds
        self.for_report = for_report
        self.test = ""                          # the test now running, named in each row

    def add(self, row: Row) -> None:
        key = (row.example, row.form, row.dtype, row.device, row.config, str(row.rung), row.quantity)
        old = self.rows.get(key)
        if old is not None:            # the same comparison at another step: keep the worst
            if old.used >= row.used:
                row.worst, row.used = old.worst, old.used
            row.max_abs, row.max_rel = max(row.max_abs, old.max_abs), max(row.max_rel, old.max_rel)
            row.norm_rel = max(row.norm_rel, old.norm_rel)
            row.passed = row.passed and old.passed
            row.test = old.test or row.test
        self.rows[key] = row


# The records being written, innermost last; outside any (a library call), a scratch one.
_active: list[Record] = []


@contextlib.contextmanager
def recording(record: Record | None = None):
    """Send the comparisons of a block to `record` (a new scratch Record by default)."""
    record = Record() if record is None else record
    _active.append(record)
    try:
        yield record
    finally:
        _active.remove(record)


def active() -> Record:
    if not _active:
        _active.append(Record())
    return _active[-1]


def report_record() -> Record | None:
    """The record the report is written from, when the innermost one is it."""
    return active() if active().for_report else None


def keep(scratch: Record) -> None:
    """Record in the active record what was first recorded into a scratch one."""
    for row in scratch.rows.values():
        active().add(row)


def _leaves(value) -> dict[str, np.ndarray]:
    if isinstance(value, dict):
        return {str(k): np.asarray(v) for k, v in value.items()}
    return {"": np.asarray(value)}


def _diff(a: np.ndarray, e: np.ndarray) -> np.ndarray:
    """|a - e| with NaN == NaN and inf == inf of the same sign counted as equal."""
    d = np.abs(a - e)
    if not np.isfinite(d).all():
        same = (a == e) | (np.isnan(a) & np.isnan(e))
        d = np.where(same, 0.0, np.where(np.isnan(d), np.inf, d))
    return d


def check(actual, expected, *, where: dict, rung, quantity: str, tol, step: int | None = None,
          step_axis: bool = False) -> Row:
    """Compare jaxport's `actual` with torch's `expected` (scalars, arrays or dicts of
    arrays by parameter name) and record the result; raise ParityError on a mismatch.

    step_axis: axis 0 of every array is the training step (the error names the first
    failing step); step: the step these values belong to, if one.
    """
    act, exp = _leaves(actual), _leaves(expected)
    problems, max_abs, max_rel, worst, worst_ratio, norm_rel = [], 0.0, 0.0, "", 0.0, 0.0
    failures = []                                      # (step, order, message) of each failing leaf
    for order, name in enumerate(exp):
        label = name or quantity
        prefix = name or ""                            # a lone tensor: the quantity already names it
        if name not in act:
            problems.append(f"{label} missing from jaxport's result")
            continue
        a, e = act[name], exp[name]
        if a.shape != e.shape:
            problems.append(f"{label}: shape {a.shape} from jaxport, {e.shape} from torch")
            continue
        a, e = a.astype(np.float64, copy=False), e.astype(np.float64, copy=False)
        d, mag = _diff(a, e), np.abs(e)
        nan_mismatch = np.isnan(a) != np.isnan(e)
        allowed = np.broadcast_to(tol.allowed(mag, name, step_axis), d.shape)
        bad = (d > allowed) | nan_mismatch
        if d.size:
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.divide(d, mag, out=np.zeros_like(d), where=d > 0)     # inf where only mag is 0
                ratio = np.divide(d, allowed, out=np.zeros_like(d), where=d > 0)
                ratio[(d > 0) & (allowed == 0)] = np.inf
                axes = tuple(range(1 if step_axis else 0, d.ndim))
                scale, worst_d = (mag.max(axis=axes), d.max(axis=axes)) if axes else (mag, d)
                norm = np.where(worst_d == 0, 0.0, worst_d / scale)
            max_abs, max_rel = max(max_abs, float(d.max())), max(max_rel, float(np.nanmax(rel)))
            norm_rel = max(norm_rel, float(np.nanmax(norm)))
            if float(ratio.max()) > worst_ratio:
                worst_ratio = float(ratio.max())
                index = np.unravel_index(int(np.argmax(ratio)), d.shape)
                worst = label + (f" @ step {index[0] + (step or 0)}" if step_axis else "")
        if bad.any():
            index = np.unravel_index(int(np.argmax(bad)), d.shape)
            at_step = index[0] + (step or 0) if step_axis else step
            kind = "NaN in only one backend" if nan_mismatch[index] else \
                f"|diff| {d[index]:.3g} > allowed {allowed[index]:.3g}"
            values = (f"jaxport's {a[index]:.3g} > allowed {allowed[index]:.3g}" if getattr(tol, "error_form", False)
                      else f"jaxport {float(a[index])!r}, torch {float(e[index])!r} ({kind})")
            where_in = (prefix + (f" at step {at_step}" if at_step is not None else "")
                        + (f", index {tuple(int(i) for i in index)}" if a.ndim else "")).strip(" ,")
            message = (where_in + ": " if where_in else "") + values
            failures.append((at_step or 0, order, message))
    extra = sorted(set(act) - set(exp))
    if extra:
        problems.append(f"jaxport has extra entries {extra}")
    if failures:                                       # the first failing step, then parameter
        problems.insert(0, min(failures)[2])
    row = Row(where["example"], where.get("form", ""), where["dtype"], where["device"],
              where.get("config", "default"), rung, quantity, max_abs, max_rel, str(tol),
              not problems, worst, worst_ratio, norm_rel, active().test)
    active().add(row)
    if problems:
        raise ParityError(
            f"parity failure: {row.example}" + (f"/{row.form}" if row.form else "") + f" {row.dtype} on {row.device}"
            + (f" [config {row.config}]" if row.config else "") + f", rung {rung} ({RUNG_NAMES.get(rung, rung)}), {quantity}: "
            + "; ".join(problems)
            + (f". Tolerance: {tol}" if getattr(tol, "error_form", False) else
               f". Over all entries: max abs {max_abs:.3g}, max rel {max_rel:.3g}; tolerance {tol}"))
    return row


RUNG_NAMES = {1: "identical inputs", 2: "loss at init", 3: "gradients at init",
              4: "one optimizer step", 5: "teacher-forced", 6: "free-running",
              7: "fitted model", "bce": "saturated BCE", "init": "default init"}


