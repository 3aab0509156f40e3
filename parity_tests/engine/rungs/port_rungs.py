"""The ladder's single-computation rungs (2: loss and outputs at init, 3: every
gradient, 4: one step, 5: teacher-forced steps), once, for two sides: torch's
(port_torch.TorchSide) and a candidate that starts each step from torch's state
(port_candidate.PortCandidate for check_port, example_sides.JaxportSide for the
examples). Tolerances: float64 the table's (parity.FLOAT64, rtol 1e-10 and atol 1e-12),
then the table plus torch's own float64 noise where exceeded; float32 the measured step
bound (step_noise.StepBound over port_torch.step_spread), then, for a tensor outside
it, the error against torch's float64 step (port_exact.py). Every comparison goes
through parity.check, so the rows are the suite's rows.

The candidate returns gradients in torch's names and layout, parameters, state and
moments in its own names (NNX's paths for check_port: LSTM's two torch biases are one
NNX bias), where it also views torch's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from parity_tests.engine import parity
from parity_tests.engine.bounds.criterion import fits
from parity_tests.engine.bounds.port_exact import check_one, exact_step
from parity_tests.engine.bounds.step_bounds import candidate_view, step_tolerances
from parity_tests.engine.bounds.step_noise import MEMBERS, MORE_MEMBERS, StepBound
from parity_tests.engine.rungs.step_compare import CHUNK, compare_step, flush
from parity_tests.engine.sides.port_models import Port, path_text
from parity_tests.engine.sides.port_nnx import NnxRunner
from parity_tests.engine.sides.port_torch import Teacher, TorchSide, output_spread


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
    members_at_init: dict = field(default_factory=dict)  # loss 0, gradients 1: in the members of their bound
    free: dict | None = None           # the free runs and the ensemble (rungs 6 and 7 share them)
    objective: object = None           # port_losses.Objective: the loss on both sides
    port: Port | None = None
    runner: NnxRunner | None = None
    where: dict | None = None          # the rows' example/form/config (default: the label)
    eval_x: object = None              # rungs 2 and 7: outputs on these rows (None: x)
    eval_y: object = None              # rung 7: the fitted model's loss and accuracy on (eval_x, eval_y) (None: x, y)
    programs: object = None            # rungs 6-7's whole runs (None: free_runs.GenericRuns)
    compared: object = None            # rung 5: fn(step, steps) -> compare this step (None: every one)
    teacher_losses: list = field(default_factory=list)   # rung 5's torch losses, step by step
    float64_fallback: bool = True      # float32: judge what exceeds the step bound against float64 (port_exact.py)

    def __post_init__(self):
        self.port_init = self.side.arrays()

    @property
    def dtype(self) -> str:
        return self.side.dtype

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
            comparable = a.shape == e.shape
            if not comparable or np.any((np.abs(a - e) > tol.allowed(np.abs(e), name, step_axis))
                                        | (np.isnan(a) != np.isnan(e))):
                name = entry if name is None else name     # a single tensor named by the caller
                label = path_text(name) if isinstance(name, tuple) else name
                d = np.abs(a - e) if comparable and a.size else None
                out.update(layer=self.cand.layer_of(name) if name is not None else None, entry=label,
                           max_abs=float(np.max(d)) if d is not None else float("inf"),
                           max_rel=float("inf") if d is None or getattr(tol, "error_form", False) else
                           float(np.max(np.divide(d, np.abs(e), out=np.where(d > 0, np.inf, 0.0), where=e != 0))))
                break
        return out


def rung2_loss_at_init(run: PortRun) -> None:
    """The loss on the whole data at the shared start (training mode), and the model's
    outputs in eval mode (on run.eval_x where given: the deep examples' held-out images)."""
    side, init = run.side, run.port_init
    xs = run.x if run.eval_x is None else run.eval_x
    t_out = side.predict(init, xs)
    j_out = run.cand.outputs(xs)
    t, j = _at_init(run)
    check_one(run, 2, "loss", j[0], t[0], _tolerance_at_init(run, 0), lambda: _exact_at_init(run)[0],
              members=run.members_at_init[0])
    tol_out = (parity.FLOAT64 if run.dtype == "float64" else
               StepBound(output_spread(side, init, xs, t_out), t_out))
    check_one(run, 2, "model output (eval mode) on the data", j_out, t_out, tol_out,
              lambda: side.outputs(side.model(init, "float64"), xs, "float64"))


def _at_init(run: PortRun) -> tuple:
    """torch's step on the whole data from the shared start with a fresh optimizer and
    the candidate's loss and gradients there (rung 2 compares the loss, rung 3 the
    gradients), once per run."""
    if not run.at_init:
        model = run.side.model(run.port_init)
        t = run.side.step(model, run.side.optimizer(model), run.x, run.y)
        run.at_init = (t, run.cand.loss_and_grads(run.port_init, run.x, run.y))
    return run.at_init


def _tolerance_at_init(run: PortRun, which: int):
    """The tolerance of quantity `which` (0 loss, 1 gradients) of the step at init: the
    table (float64) or the result term alone (float32) where it holds, else the
    measured one with MEMBERS members, in float32 MORE_MEMBERS where those are
    exceeded (measured only then), as rungs 4-5 do; the members' values of the
    quantity are kept for the judgement against float64 (run.members_at_init)."""
    t, j = run.at_init
    plan = (None, MEMBERS) if run.dtype == "float64" else (0, MEMBERS, MORE_MEMBERS)
    for members in plan:
        kept = []
        tol = step_tolerances(run, (run.port_init, {}, 0), run.x, run.y, t, members, kept)[which]
        run.members_at_init[which] = [candidate_view(run, m)[which] for m in kept]
        if members == plan[-1] or fits(j[which], t[which], tol):
            return tol


def _exact_at_init(run: PortRun) -> tuple:
    """torch's float64 step from the float32 start (port_exact.py), once per run."""
    if run.exact_at_init is None:
        run.exact_at_init = exact_step(run.side, (run.port_init, {}, 0), run.x, run.y)
    return run.exact_at_init


def rung3_gradients_at_init(run: PortRun) -> None:
    t, j = _at_init(run)
    check_one(run, 3, "gradients", j[1], t[1], _tolerance_at_init(run, 1), lambda: _exact_at_init(run)[1],
              members=run.members_at_init[1])


def rung4_one_step(run: PortRun) -> None:
    """A step from the shared weights with a fresh optimizer, then a second step from
    torch's parameters and optimizer state."""
    teacher = Teacher(run.side)
    run.cand.fresh()
    for step, idx in enumerate(run.batches[:2]):
        xb, yb, state = run.x[idx], run.y[idx], teacher.state()
        t = teacher.step(xb, yb)
        j = run.cand.step(state, xb, yb)
        compare_step(run, 4, "" if step == 0 else "step 2 from torch's state: ", state, xb, yb, t, j, step)


def rung5_teacher_forced(run: PortRun) -> None:
    """Every step of the run from torch's state (parameters, running statistics and
    optimizer moments): torch's own loop is the teacher. run.compared may pick the
    steps compared; torch's own steps carry the state between them. The teacher's
    losses are kept (run.teacher_losses)."""
    teacher = Teacher(run.side)
    run.cand.fresh()                   # as torch's teacher: a fresh optimizer at step 0
    run.teacher_losses, chunk = [], []
    for step, idx in enumerate(run.batches):
        xb, yb = run.x[idx], run.y[idx]
        if run.compared is not None and not run.compared(step, len(run.batches)):
            run.teacher_losses.append(teacher.step(xb, yb)[0])
            if not flush(run, chunk):
                return
            continue
        state = teacher.state()
        t = teacher.step(xb, yb)
        run.teacher_losses.append(t[0])
        j = run.cand.step(state, xb, yb)
        if chunk and (len(chunk) == CHUNK or len(idx) != len(chunk[-1][4])) and not flush(run, chunk):
            return
        chunk.append((step, state, t, j, idx))
    flush(run, chunk)


RUNGS = {2: rung2_loss_at_init, 3: rung3_gradients_at_init, 4: rung4_one_step, 5: rung5_teacher_forced}
