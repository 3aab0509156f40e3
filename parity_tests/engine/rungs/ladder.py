"""The examples' ladder: rung 1 (identical inputs, through the backends' twin API), and
rungs 2-7 as check_port's (port_rungs.py, free_runs.py) over the examples' sides
(sides/example_sides.py: torchref's model, loss and optimizer against jaxport's compiled
step and whole run). Each rung raises the first ParityError; the tests, the planted-bug
tests, `make portability` and `compare` call the same functions.

The deep examples (cnn, lstm, gru: BatchNorm, dropout, recurrent cells) carry state
besides their parameters: BatchNorm's running statistics and the shared dropout's step
counter travel in the exchange format with the weights, and dropout stays ON in training
mode (both backends drop the same units: portcore/dropout_hash.py). Their rungs 2-4 take
the first two batches, rung 5 the first epoch, and rungs 2 and 7 the held-out images.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

import jaxport.training as jt
import torchref.training as tt
from parity_tests.engine.rungs import free_runs, harness
from portcore import registry, specs
from parity_tests.engine.parity import EXACT, TOLERANCES, check
from parity_tests.engine.sides.runs import (SEED, Cell, Run, batches, data, default_run, init,  # noqa: F401
                                            jax_fit, torch_fit)
from parity_tests.engine.sides.example_sides import (clear_jax_caches, example_run, exchange_opt_state,  # noqa: F401
                                                     raise_first_failure)


# ---- the rungs ----------------------------------------------------------------------
def rung1_identical_inputs(cell: Cell) -> None:
    """Same data, initial weights and batch order reach both backends: with lr 0, each
    backend's fit returns the shared weights bit for bit (cast to the dtype) and its
    per-step losses are torch's loss on exactly the batches specs.batch_order names;
    the default run's first loss is each backend's own loss_and_grads at init."""
    ex, x, y = cell.example, *data(cell.example)
    redrawn = registry.make_data(ex, SEED) + (registry.shared_init(ex, SEED),)
    for name, first, again in zip(("data x", "data y", "shared init"), (x, y, init(ex)), redrawn):
        check(again, first, where=cell.where(), rung=1, quantity=f"{name}: redrawn", tol=EXACT)
    assert x.dtype == y.dtype == np.float64 and all(v.dtype == np.float64 for v in init(ex).values())
    run = Run("lr 0, batch 30, shuffled, 2 epochs", registry.get(ex).defaults.replace(
        lr=0.0, epochs=2, batch_size=30, shuffle=True))
    order = run.order(len(x))
    assert all(sorted(row) == list(range(len(x))) for row in order) and not np.array_equal(*order)
    cast = {k: v.astype(cell.dtype) for k, v in init(ex).items()}
    expected = np.array([tt.loss_and_grads(ex, cast, x[i], y[i], **cell.kw)[0] for _, i in batches(order, 30)])
    for name, backend in (("torch", tt), ("jaxport", jt)):
        r = backend.fit(ex, init(ex), x, y, order, run.config, **cell.kw)
        check(r.params, cast, where=cell.where(run), rung=1, tol=EXACT,
              quantity=f"{name}.fit params == shared init (lr 0)")
        check(r.step_losses, expected, where=cell.where(run), rung=1, tol=TOLERANCES[cell.dtype],
              quantity=f"{name}.fit step losses vs torch loss on batch_order's batches", step_axis=True)
    d = default_run(ex)
    for name, backend, fit in (("torch", tt, torch_fit), ("jaxport", jt, jax_fit)):
        own = backend.loss_and_grads(ex, init(ex), x, y, **cell.kw)[0]
        check(fit(cell, d).step_losses[0], own, where=cell.where(d), rung=1, tol=TOLERANCES[cell.dtype],
              quantity=f"{name}.fit first step loss == {name}.loss_and_grads at init")


def deep(example) -> bool:
    return registry.get(example).ladder == "deep"


def _compared(step: int, total: int) -> bool:
    """float32 steps need their measured tolerance where the result term alone is
    exceeded: `make test` compares a slice of rung 5, the first 100 steps, 50 from the
    middle and the last 50; `make report` (JAXPORT_REPORT) and JAXPORT_FULL=1 every
    step. The tutorial's float64 steps are always all compared."""
    return step < 100 or total // 2 <= step < total // 2 + 50 or step >= total - 50


def _deep_compared(step: int, total: int) -> bool:
    """The deep examples' first epoch, in both dtypes: its first and last three steps
    (the last on the epoch's partial batch), every one with JAXPORT_FULL or JAXPORT_REPORT."""
    return step < 3 or step >= total - 3


def port_run(cell: Cell, run: Run | None = None, max_steps: int | None = None):
    """check_port's run over the example's sides (sides/example_sides.py): torchref's
    model, loss and optimizer against jaxport's compiled step, the run's first
    `max_steps` batches (all: None; the deep examples' default: 2)."""
    run = run or default_run(cell.example)
    x, y = data(cell.example, run.seed)
    every = bool(os.environ.get("JAXPORT_REPORT") or os.environ.get("JAXPORT_FULL"))
    steps = [idx for _, idx in batches(run.order(len(x)), run.config.batch_size)]
    if deep(cell.example):
        xh, yh = data(cell.example, run.seed, held_out=True)
        return example_run(cell, run, x, y, steps[:max_steps or 2], init(cell.example, run), eval_x=xh, eval_y=yh,
                           compared=None if every else _deep_compared)
    every = every or cell.dtype == "float64"
    # float32: the measured bound alone, which every correct step of these examples holds
    # (JAXPORT_FULL=1 on MKL's AUTO, AVX2 and COMPATIBLE): the fallback against float64
    # let the planted bias correction in float32 pass rungs 2-5 (port_exact.py)
    return example_run(cell, run, x, y, steps[:max_steps], init(cell.example, run),
                       compared=None if every else _compared, float64_fallback=False)


def _rung(number: int, cell: Cell, run: Run | None, max_steps: int | None = None):
    r = port_run(cell, run, max_steps)
    harness.RUNGS[number](r)           # check_port's rungs, over the example's PortRun
    raise_first_failure(r)
    return r


def rung2_loss_at_init(cell: Cell, run: Run | None = None) -> None:
    """The loss and the model's output on the whole data at the run's initial weights
    (the deep examples: training mode, batch statistics and dropout at step 0; the
    outputs in eval mode on the held-out images)."""
    _rung(2, cell, run)


def rung3_gradients_at_init(cell: Cell, run: Run | None = None) -> None:
    _rung(3, cell, run)


def rung4_one_step(cell: Cell, run: Run | None = None) -> None:
    """train_step from the shared init and a fresh optimizer, then a second step from
    torch's state (parameters and optimizer state fed to both)."""
    _rung(4, cell, run)


def rung5_teacher_forced(cell: Cell, run: Run | None = None, max_steps: int | None = None) -> int:
    """Every step of the run from torch's state (the deep examples: of its first epoch):
    torch's own loop (torchref's model, optimizer and loss) is the teacher; jaxport's
    compiled step starts each step from the teacher's parameters and optimizer state
    (float32 in `make test`: a slice of the steps, see _compared). Then the sides
    themselves: the teacher's losses are torchref.fit's, and both sides' first two
    steps are the backends' train_step, bit for bit. Returns the number of steps run."""
    run = run or default_run(cell.example)
    if deep(cell.example) and max_steps is None:
        max_steps = specs.steps_per_epoch(len(data(cell.example, run.seed)[0]), run.config.batch_size)
    r = _rung(5, cell, run, max_steps)
    n = len(r.teacher_losses)
    one_device = dataclasses.replace(run, devices=1)
    check(np.array(r.teacher_losses), torch_fit(cell, one_device).step_losses[:n], where=cell.where(run), rung=5,
          tol=EXACT, quantity="(self) torch teacher's losses == torchref.fit (one device)", step_axis=True)
    _sides_are_the_backends(cell, run, r)
    return n


def _sides_are_the_backends(cell: Cell, run: Run, r) -> None:
    """The first two steps of each side (the second from torch's state) against the
    backend's own train_step: the rungs check jaxport's and torchref's contract."""
    ex, state = cell.example, (r.port_init, {}, 0)
    rename = r.cand.rename
    for step, idx in enumerate(r.batches[:2]):
        xb, yb = r.x[idx], r.y[idx]
        model = r.side.model(state[0])
        t = r.side.step(model, r.side.optimizer(model, *state[1:]), xb, yb)
        j = r.cand.step(state, xb, yb)
        # the exchange format holds every entry as a float of the dtype (the dropout step too)
        params = {rename[k]: np.asarray(v, cell.dtype) for k, v in state[0].items() if k in rename}
        moments = exchange_opt_state(state[1], state[2], rename)
        api_t = tt.train_step(ex, params, moments, xb, yb, run.config, **cell.kw)
        api_j = jt.train_step(ex, params, moments, xb, yb, run.config, **cell.kw)
        where = dict(where=cell.where(run), rung=5, tol=EXACT, step=step)
        check({rename[k]: v for k, v in t[2].items() if k in rename}, api_t[2],
              quantity="(self) torch teacher == torchref.train_step", **where)
        check({k: v for k, v in j[2].items() if k in api_j[2]}, api_j[2],
              quantity="(self) jaxport's side == jaxport.train_step", **where)
        state = t[2:]


def rung6_free_running(cell: Cell, run: Run | None = None) -> None:
    """The whole run from the run's start on both backends (torchref.fit and jaxport's
    fit), judged against torch's ensemble (free_runs.py)."""
    _rung(6, cell, run)


def rung7_fitted_model(cell: Cell, run: Run | None = None) -> None:
    """The fitted models' loss, predictions and accuracy (the deep examples: on the
    held-out images)."""
    _rung(7, cell, run)


def free_run_verdict(cell: Cell, run: Run | None = None) -> dict:
    """Rungs 6-7's runs, ensemble and horizon (cached for the session)."""
    return free_runs.free_runs(port_run(cell, run, 2))


LADDER = {1: rung1_identical_inputs, 2: rung2_loss_at_init, 3: rung3_gradients_at_init,
          4: rung4_one_step, 5: rung5_teacher_forced, 6: rung6_free_running, 7: rung7_fitted_model}
