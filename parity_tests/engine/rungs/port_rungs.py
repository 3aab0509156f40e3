"""The ladder's single-computation rungs for any port (2: loss and outputs at init,
3: every gradient, 4: one step, 5: teacher-forced steps), with the ladder's tolerances:
float64 the table's (parity.FLOAT64, rtol 1e-10 and atol 1e-12, as for the examples);
float32 a step's measured noise (step_noise.StepBound over port_torch.step_spread:
4 x the spread of float64 torch steps moved one float32 ulp + 4 ulps of the tensor's
largest entry). Every comparison goes through parity.check, so the rows are the
suite's rows.

Gradients are compared in torch's names and layout (NNX's pulled back entry by entry,
port_models.pullback_index), parameters and optimizer moments on NNX's paths (torch's
converted forward, exact: LSTM's two biases are one NNX bias).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from parity_tests.engine import parity
from parity_tests.engine.bounds.port_exact import check_against_float64, check_one, exact_step
from parity_tests.engine.sides.port_models import Port, path_text
from parity_tests.engine.sides.port_nnx import NnxRunner
from parity_tests.engine.sides.port_torch import (Teacher, TorchSide, float64_spread, output_spread,
                                                  step_spread)
from parity_tests.engine.bounds.step_noise import MEMBERS, MORE_MEMBERS, NOISE_MULTIPLE, StepBound


def batches(n: int, batch_size: int, steps: int) -> list[np.ndarray]:
    """DataLoader(shuffle=False, drop_last=False)'s batches, epoch after epoch, `steps` of them."""
    per_epoch = [np.arange(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    return [per_epoch[i % len(per_epoch)] for i in range(steps)]


@dataclass
class PortRun:
    """Everything the rungs share: the two sides, the data and the record of comparisons.
    side: the reference (port_torch.TorchSide); cand: the side under test, which starts
    each step from torch's state and views torch's results in its own names
    (port_candidate.PortCandidate for check_port, example_sides.JaxportSide for the
    examples). port and runner: check_port's own (its free runs and locator use them)."""
    side: TorchSide
    cand: object
    x: np.ndarray
    y: np.ndarray
    batches: list
    label: str                         # the model and optimizer, for the rows
    loss_name: str                     # the loss's name (rung 7 scores accuracy by it)
    record: parity.Record = field(default_factory=parity.Record)   # every comparison, in order
    failures: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)   # what the report's header says
    at_init: tuple = ()                # rung 2's (torch step, candidate step), for rung 3
    exact_at_init: tuple | None = None  # torch's float64 step from the float32 start (port_exact.py)
    free: dict | None = None           # the free runs and the ensemble (rungs 6 and 7 share them)
    objective: object = None           # port_losses.Objective: the loss on both sides
    port: Port | None = None
    runner: NnxRunner | None = None
    where: dict | None = None          # the rows' example/form/config (default: the label)
    eval_x: object = None              # rung 2's outputs on these rows (None: x)
    compared: object = None            # rung 5: fn(step, steps) -> compare this step (None: every one)

    def __post_init__(self):
        self.port_init = self.side.arrays()

    @property
    def dtype(self) -> str:
        return self.side.dtype

    def texts(self, flat: dict, moment: str | None = None) -> dict:
        return self.cand.texts(flat, moment)

    def check(self, actual, expected, *, rung, quantity, tol, step=None, step_axis=False, entry=None) -> bool:
        """parity.check into this run's record; a failure is kept (with its first failing
        layer) and the rung goes on with the next quantity."""
        where = self.where or dict(example=self.label, form="", dtype=self.dtype, device="cpu", config="")
        try:
            with parity.recording(self.record):
                parity.check(actual, expected, where=where, rung=rung, quantity=quantity, tol=tol, step=step,
                             step_axis=step_axis)
            return True
        except parity.ParityError as error:
            self.failures.append(self._failure(actual, expected, rung, quantity, tol, step, str(error), step_axis,
                                               entry))
            return False

    def _failure(self, actual, expected, rung, quantity, tol, step, message, step_axis=False, entry=None) -> dict:
        names = list(expected) if isinstance(expected, dict) else [None]
        out = dict(rung=rung, rung_name=parity.RUNG_NAMES.get(rung, rung), step=step, quantity=quantity,
                   layer=None, entry=None, message=message)
        for name in names:             # the first tensor outside its tolerance names the layer
            a = np.asarray(actual[name] if name is not None else actual, np.float64)
            e = np.asarray(expected[name] if name is not None else expected, np.float64)
            if a.shape != e.shape:
                bad = True
            else:
                d = np.abs(a - e)
                bad = bool(np.any((d > tol.allowed(np.abs(e), name, step_axis)) | (np.isnan(a) != np.isnan(e))))
            if bad:
                name = entry if name is None else name     # a single tensor named by the caller
                label = path_text(name) if isinstance(name, tuple) else name
                out.update(layer=self.cand.layer_of(name) if name is not None else None, entry=label,
                           max_abs=float(np.max(np.abs(a - e))) if a.shape == e.shape and a.size else float("inf"),
                           max_rel=float(np.max(np.abs(a - e) / np.maximum(np.abs(e), 1e-300)))
                           if a.shape == e.shape and a.size else float("inf"))
                break
        return out


def _step_tolerances(run: PortRun, state, xb, yb, t, members) -> tuple:
    """(loss, grads, params, moments) tolerances of one step: float64 the table's
    (members None), or the table's plus the measured row-order noise; float32
    StepBound with `members` measured members (0: the result term alone)."""
    if run.dtype == "float64" and members is None:
        return (parity.FLOAT64,) * 4
    nnx_t = run.cand.view(t[2], t[3])
    if run.dtype == "float64":
        s = float64_spread(run.side, state, xb, yb, t, members=members)
        if s is None:                  # a one-row batch has no other order
            return (parity.FLOAT64,) * 4
        return (TableAndNoise(s[0]), TableAndNoise(s[1]), *map(TableAndNoise, run.cand.view(s[2], s[3])))
    if members == 0:
        return (StepBound(0.0, t[0]), StepBound(0.0, t[1]), StepBound(0.0, nnx_t[0]), StepBound(0.0, nnx_t[1]))
    s = step_spread(run.side, state, xb, yb, t, members=members)
    spread = run.cand.view(s[2], s[3])                           # sums of spreads where NNX sums
    return (StepBound(s[0], t[0]), StepBound(s[1], t[1]), StepBound(spread[0], nnx_t[0]),
            StepBound(spread[1], nnx_t[1]))


@dataclass
class TableAndNoise:
    """float64 where the table alone is exceeded: the table's tolerance plus
    NOISE_MULTIPLE x the spread of float64 torch steps over other row orders and from
    the state moved one float64 ulp (port_torch.float64_spread)."""
    spread: object                     # a float, or {name: array}

    def allowed(self, expected, name=None, step_axis=False):
        spread = self.spread[name] if isinstance(self.spread, dict) else self.spread
        return parity.FLOAT64.allowed(expected) + NOISE_MULTIPLE * np.asarray(spread)

    def __str__(self):
        return (f"{parity.FLOAT64} + {NOISE_MULTIPLE:g} x spread of float64 torch steps over other row orders "
                "and moved one ulp")


def _compare_step(run: PortRun, rung: int, prefix: str, state, xb, yb, t, j, step) -> bool:
    """One step's four quantities; float32: the result term alone, then the measured
    bound with MEMBERS members, then MORE_MEMBERS (a maximum over 4 random directions
    can miss the worst one), as the ladder does. float64: the table, then the table
    plus the measured row-order noise (TableAndNoise)."""
    # the state a step updates besides the parameters (BatchNorm's running statistics):
    # compared at every step, as torch's buffers viewed in the candidate's names
    nnx_t = run.cand.view(t[2], t[3])
    expected = (t[0], t[1], nnx_t[0], nnx_t[1])
    names = ("loss", "gradients", "parameters and state after the update" if run.cand.state_paths else
             "parameters after the update", "optimizer state after the update")
    actual = j
    plan = (0, MEMBERS, MORE_MEMBERS) if run.dtype == "float32" else (None, MEMBERS, MORE_MEMBERS)
    for members in plan:
        tols = _step_tolerances(run, state, xb, yb, t, members)
        fit = all(_fits(a, e, tol) for a, e, tol in zip(actual, expected, tols))
        if members != plan[-1] and not fit:
            continue
        if run.dtype == "float32" and not fit:      # port_exact.py: the error against float64
            x64 = exact_step(run.side, state, xb, yb)
            exact = (x64[0], x64[1], *run.cand.view(x64[2], x64[3]))
            return check_against_float64(run, rung, [(prefix + n, a, e, tol, x) for n, a, e, tol, x in zip(
                names, actual, expected, tols, exact) if not (isinstance(e, dict) and not e)], _fits, step)
        ok = True
        for a, e, tol, name in zip(actual, expected, tols, names):
            if isinstance(e, dict) and not e:
                continue
            ok &= run.check(a, e, rung=rung, quantity=prefix + name, tol=tol, step=step)
        return ok
    return False


def _fits(actual, expected, tol) -> bool:
    if isinstance(expected, dict):
        return all(k in actual and np.shape(actual[k]) == np.shape(v) and np.all(
            np.abs(np.asarray(actual[k], np.float64) - v) <= tol.allowed(np.abs(np.asarray(v, np.float64)), k))
            for k, v in expected.items())
    return bool(np.all(np.abs(np.float64(actual) - np.float64(expected)) <= tol.allowed(abs(np.float64(expected)))))


def rung2_loss_at_init(run: PortRun) -> None:
    """The loss on the whole data at the shared start (training mode), and the model's
    outputs in eval mode (on run.eval_x where given: the deep examples' held-out images)."""
    side, init = run.side, run.port_init
    xs = run.x if run.eval_x is None else run.eval_x
    t_out = side.predict(init, xs)
    j_out = run.cand.outputs(xs)
    t, j = _at_init(run)
    tol_loss = _step_tolerances(run, (init, {}, 0), run.x, run.y, t, MEMBERS)[0]
    check_one(run, 2, "loss", j[0], t[0], tol_loss, lambda: _exact_at_init(run)[0], _fits)
    tol_out = (parity.FLOAT64 if run.dtype == "float64" else
               StepBound(output_spread(side, init, xs, t_out), t_out))

    def exact_out():
        return side.outputs(side.model(init, "float64"), xs, "float64")
    check_one(run, 2, "model output (eval mode) on the data", j_out, t_out, tol_out, exact_out, _fits)


def _at_init(run: PortRun) -> tuple:
    """Both sides' step on the whole data from the shared start with a fresh optimizer
    (rung 2 compares its loss, rung 3 its gradients), once per run."""
    if not run.at_init:
        model = run.side.model(run.port_init)
        t = run.side.step(model, run.side.optimizer(model), run.x, run.y)
        run.cand.fresh()
        run.at_init = (t, run.cand.step((run.port_init, {}, 0), run.x, run.y))
    return run.at_init


def _exact_at_init(run: PortRun) -> tuple:
    """torch's float64 step from the float32 start (port_exact.py), once per run."""
    if run.exact_at_init is None:
        run.exact_at_init = exact_step(run.side, (run.port_init, {}, 0), run.x, run.y)
    return run.exact_at_init


def rung3_gradients_at_init(run: PortRun) -> None:
    t, j = _at_init(run)
    tol = _step_tolerances(run, (run.port_init, {}, 0), run.x, run.y, t, MEMBERS)[1]
    check_one(run, 3, "gradients", j[1], t[1], tol, lambda: _exact_at_init(run)[1], _fits)


def rung4_one_step(run: PortRun) -> None:
    """A step from the shared weights with a fresh optimizer, then a second step from
    torch's parameters and optimizer state."""
    teacher = Teacher(run.side)
    run.cand.fresh()
    for step, idx in enumerate(run.batches[:2]):
        state = teacher.state()
        t = teacher.step(run.x[idx], run.y[idx])
        j = run.cand.step(state, run.x[idx], run.y[idx])
        _compare_step(run, 4, "" if step == 0 else "step 2 from torch's state: ", state, run.x[idx], run.y[idx],
                      t, j, step)


def rung5_teacher_forced(run: PortRun) -> None:
    """Every step of the run from torch's state (parameters, running statistics and
    optimizer moments): torch's own loop is the teacher. run.compared may pick the
    steps compared; torch's own steps carry the state between them."""
    teacher = Teacher(run.side)
    run.cand.fresh()                   # as torch's teacher: a fresh optimizer at step 0
    for step, idx in enumerate(run.batches):
        if run.compared is not None and not run.compared(step, len(run.batches)):
            teacher.step(run.x[idx], run.y[idx])
            continue
        state = teacher.state()
        t = teacher.step(run.x[idx], run.y[idx])
        j = run.cand.step(state, run.x[idx], run.y[idx])
        if not _compare_step(run, 5, "", state, run.x[idx], run.y[idx], t, j, step):
            return                     # the first failing step names the problem


RUNGS = {2: rung2_loss_at_init, 3: rung3_gradients_at_init, 4: rung4_one_step, 5: rung5_teacher_forced}
