"""The parity ladder's rungs, written once and generic over the examples through the
twin API (torchref.training / jaxport.training). Each rung compares jaxport with torch
through parity.check; the tests and the planted-bug test call the same functions.
"""
from __future__ import annotations

import itertools

import numpy as np

import jaxport.training as jt
import parity
import torchref.training as tt
from examples import specs
from parity import EXACT, Envelope, ParityError, check, recording_into, tolerance
from runs import (SEED, Cell, Run, batches, clear_jax_caches, data, default_run, envelope,  # noqa: F401
                  fitted_model, init, jax_fit, torch_fit)
from teacher import JaxStepper, TorchTeacher, kink_referee, opt_state_pair, step_with_kinks_decided

CHUNK = 50                             # teacher-forced steps compared at once


# ---- the rungs ----------------------------------------------------------------------
def rung1_identical_inputs(cell: Cell) -> None:
    """Same data, initial weights and batch order reach both backends: with lr 0, each
    backend's fit returns the shared weights bit for bit (cast to the dtype) and its
    per-step losses are torch's loss on exactly the batches specs.batch_order names;
    the default run's first loss is each backend's own loss_and_grads at init."""
    ex, x, y = cell.example, *data(cell.example)
    redrawn = specs.make_data(ex, SEED) + (specs.shared_init(ex, SEED),)
    for name, first, again in zip(("data x", "data y", "shared init"), (x, y, init(ex)), redrawn):
        check(again, first, where=cell.where(), rung=1, quantity=f"{name}: redrawn", tol=EXACT)
    assert x.dtype == y.dtype == np.float64 and all(v.dtype == np.float64 for v in init(ex).values())
    run = Run("lr 0, batch 30, shuffled, 2 epochs", specs.DEFAULTS[ex].replace(
        lr=0.0, epochs=2, batch_size=30, shuffle=True))
    order = run.order(len(x))
    assert all(sorted(row) == list(range(len(x))) for row in order) and not np.array_equal(*order)
    cast = {k: v.astype(cell.dtype) for k, v in init(ex).items()}
    expected = np.array([tt.loss_and_grads(ex, cast, x[i], y[i], **cell.kw)[0] for _, i in batches(order, 30)])
    for name, backend in (("torch", tt), ("jaxport", jt)):
        r = backend.fit(ex, init(ex), x, y, order, run.config, **cell.kw)
        check(r.params, cast, where=cell.where(run), rung=1, tol=EXACT,
              quantity=f"{name}.fit params == shared init (lr 0)")
        check(r.step_losses, expected, where=cell.where(run), rung=1, tol=tolerance(cell.dtype, 1),
              quantity=f"{name}.fit step losses vs torch loss on batch_order's batches", step_axis=True)
    d = default_run(ex)
    for name, backend, fit in (("torch", tt, torch_fit), ("jaxport", jt, jax_fit)):
        own = backend.loss_and_grads(ex, init(ex), x, y, **cell.kw)[0]
        check(fit(cell, d).step_losses[0], own, where=cell.where(d), rung=1, tol=tolerance(cell.dtype, 1),
              quantity=f"{name}.fit first step loss == {name}.loss_and_grads at init")


def rung2_loss_at_init(cell: Cell) -> None:
    ex, x, y = cell.example, *data(cell.example)
    t, j = tt.loss_and_grads(ex, init(ex), x, y, **cell.kw), jt.loss_and_grads(ex, init(ex), x, y, **cell.kw)
    tol = tolerance(cell.dtype, 2)
    check(j[0], t[0], where=cell.where(), rung=2, quantity="loss", tol=tol)
    check(jt.predict(ex, init(ex), x, **cell.kw), tt.predict(ex, init(ex), x, **cell.kw),
          where=cell.where(), rung=2, quantity="model output on the data", tol=tol)


def rung3_gradients_at_init(cell: Cell) -> None:
    ex, x, y = cell.example, *data(cell.example)
    t, j = tt.loss_and_grads(ex, init(ex), x, y, **cell.kw), jt.loss_and_grads(ex, init(ex), x, y, **cell.kw)
    check(j[1], t[1], where=cell.where(), rung=3, quantity="gradients", tol=tolerance(cell.dtype, 3))


def _check_step(cell, run, rung, prefix, t, j, step=None, step_axis=False):
    tol = tolerance(cell.dtype, rung)
    kw = dict(where=cell.where(run), rung=rung, tol=tol, step=step, step_axis=step_axis)
    check(j[0], t[0], quantity=f"{prefix}loss", **kw)
    check(j[1], t[1], quantity=f"{prefix}gradients", **kw)
    check(j[2], t[2], quantity=f"{prefix}parameters after the update", **kw)
    check(*opt_state_pair(j[3], t[3]), quantity=f"{prefix}optimizer state after the update", **kw)


def _check_step_refereed(cell, run, rung, prefix, state, xb, yb, t, j, step=None):
    """_check_step, except that a float32 step whose difference is explained by ReLU
    kinks that float32 cannot decide passes against a float64 torch step with those
    kinks decided jaxport's way (teacher.kink_referee), and is listed in the report."""
    scratch = {}
    try:
        with recording_into(scratch):
            _check_step(cell, run, rung, prefix, t, j, step=step)
    except ParityError as error:
        def agree(result):
            try:
                with recording_into({}):
                    _check_step(cell, run, rung, prefix, result, j, step=step)
                return True
            except ParityError:
                return False
        verdict = kink_referee(cell, run.config, state, xb, yb, agree)
        if verdict is None:
            raise
        result = step_with_kinks_decided(cell, run.config, state, xb, yb, *verdict)
        _check_step(cell, run, rung, f"{prefix}ReLU-kink step vs float64 torch, kinks decided: ",
                    result, j, step=step)
        if parity.recording_for_the_report():
            parity.SESSION.setdefault("kinks", []).append(dict(
                cell=str(cell), config=run.label, rung=rung, step=step, kinks=verdict[0],
                signs=verdict[1], error=str(error)))
        return
    parity.keep(scratch)


def _stack(steps: list) -> tuple:
    """[(loss, grads, params, opt)] per step -> the same with a leading step axis."""
    def cat(dicts):
        return {k: np.stack([d[k] for d in dicts]) for k in dicts[0]} if dicts[0] else {}
    return (np.array([s[0] for s in steps]), cat([s[1] for s in steps]), cat([s[2] for s in steps]),
            cat([s[3] for s in steps]))


def rung4_one_step(cell: Cell, run: Run | None = None) -> None:
    """train_step from the shared init and a fresh optimizer, then a second step from
    torch's state (parameters and optimizer state fed to both)."""
    run = run or default_run(cell.example)
    ex, x, y = cell.example, *data(cell.example)
    (_, i0), (_, i1) = itertools.islice(batches(run.order(len(x)), run.config.batch_size), 2)
    args = (run.config,)
    t = tt.train_step(ex, init(ex), None, x[i0], y[i0], *args, **cell.kw)
    j = jt.train_step(ex, init(ex), None, x[i0], y[i0], *args, **cell.kw)
    _check_step_refereed(cell, run, 4, "", (init(ex), {}), x[i0], y[i0], t, j)
    # torchref.train_step writes the optimizer moments into the arrays it is given: a copy
    t2 = tt.train_step(ex, t[2], {k: v.copy() for k, v in t[3].items()}, x[i1], y[i1], *args, **cell.kw)
    j2 = jt.train_step(ex, t[2], t[3], x[i1], y[i1], *args, **cell.kw)
    _check_step_refereed(cell, run, 4, "step 2 from torch's state: ", (t[2], t[3]), x[i1], y[i1], t2, j2)


def rung5_teacher_forced(cell: Cell, run: Run | None = None, max_steps: int | None = None) -> int:
    """Every step of the run from torch's state: torch's own loop (torchref's model,
    optimizer and loss, kept between steps like its fit) is the teacher; jaxport's
    compiled train step starts each step from the teacher's parameters and optimizer
    state. Returns the number of steps checked."""
    run = run or default_run(cell.example)
    ex, x, y = cell.example, *data(cell.example)
    teacher, stepper = TorchTeacher(cell, run.config, init(ex)), JaxStepper.get(cell, run.config)
    losses, chunk, first = [], [], 0

    def flush():                       # compare CHUNK steps at once: ~50x less overhead
        if not chunk:
            return
        scratch = {}
        try:
            with recording_into(scratch):
                _check_step(cell, run, 5, "", _stack([c[1] for c in chunk]), _stack([c[2] for c in chunk]),
                            step=first, step_axis=True)
            parity.keep(scratch)
        except ParityError:            # step by step, to name the step or referee a kink
            for i, (state, t, j, idx) in enumerate(chunk):
                _check_step_refereed(cell, run, 5, "", state, x[idx], y[idx], t, j, step=first + i)
        chunk.clear()
    for step, idx in batches(run.order(len(x)), run.config.batch_size):
        if max_steps is not None and step >= max_steps:
            break
        state, t = teacher.state(), teacher.step(x[idx], y[idx])
        j = stepper(*state, x[idx], y[idx])
        if chunk and (len(chunk) == CHUNK or len(idx) != len(chunk[-1][3])):
            flush()
            first = step
        chunk.append((state, t, j, idx))
        losses.append(t[0])
        if step in (0, 1):             # the shortcuts are the API's computations, bit for bit
            api = jt.train_step(ex, *state, x[idx], y[idx], run.config, **cell.kw)
            check(j[2], api[2], where=cell.where(run), rung=5, tol=EXACT, step=step,
                  quantity="(self) jaxport fast path == jaxport.train_step")
            api = tt.train_step(ex, state[0], {k: v.copy() for k, v in state[1].items()},
                                x[idx], y[idx], run.config, **cell.kw)
            check(t[2], api[2], where=cell.where(run), rung=5, tol=EXACT, step=step,
                  quantity="(self) torch teacher == torchref.train_step")
    flush()
    n = len(losses)
    check(np.array(losses), torch_fit(cell, run).step_losses[:n], where=cell.where(run), rung=5,
          tol=EXACT, quantity="(self) torch teacher's losses == torchref.fit", step_axis=True)
    return n


def rung6_free_running(cell: Cell, run: Run | None = None) -> None:
    run = run or default_run(cell.example)
    t, j = torch_fit(cell, run), jax_fit(cell, run)
    kw = dict(where=cell.where(run), rung=6)
    if cell.dtype == "float64":
        tol = tolerance(cell.dtype, 6)
        check(j.step_losses, t.step_losses, quantity="per-step losses", tol=tol, step_axis=True, **kw)
        check(j.params, t.params, quantity="fitted parameters", tol=tol, **kw)
        return
    env = envelope(cell, run)
    bound = Envelope(env["loss"])
    parity.keep_curve((cell.example, cell.form, cell.device, run.label), parity.Curve(
        np.abs(j.step_losses.astype(np.float64) - t.step_losses), env["loss"],
        bound.allowed(t.step_losses.astype(np.float64)), env["runs"]))
    check(j.step_losses, t.step_losses, quantity="per-step losses", tol=bound, step_axis=True, **kw)
    check(j.params, t.params, quantity="fitted parameters", tol=Envelope(env["params"]), **kw)


def rung7_fitted_model(cell: Cell, run: Run | None = None) -> None:
    run = run or default_run(cell.example)
    t = fitted_model(tt, cell, torch_fit(cell, run).params)
    j = fitted_model(jt, cell, jax_fit(cell, run).params)
    env = envelope(cell, run) if cell.dtype == "float32" else None
    for q in t:
        tol = Envelope(env[q]) if env else tolerance(cell.dtype, 7)
        check(j[q], t[q], where=cell.where(run), rung=7, quantity=q, tol=tol)


LADDER = {1: rung1_identical_inputs, 2: rung2_loss_at_init, 3: rung3_gradients_at_init,
          4: rung4_one_step, 5: rung5_teacher_forced, 6: rung6_free_running, 7: rung7_fitted_model}
