"""The tutorial's examples' ladder: rung 1 (identical inputs, through the backends'
twin API), rungs 2-5 as check_port's (port_rungs.py) over the examples' sides
(sides/example_sides.py: torchref's model against jaxport's compiled step), and 6-7
(free_run.py). Each rung raises the first ParityError; the tests, the planted-bug test
and `compare` call the same functions.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

import jaxport.training as jt
import torchref.training as tt
from parity_tests.engine.rungs import port_rungs
from portcore import registry
from parity_tests.engine.rungs.free_run import free_run_verdict, rung6_free_running, rung7_fitted_model  # noqa: F401
from parity_tests.engine.parity import EXACT, check, tolerance
from parity_tests.engine.sides.runs import (SEED, Cell, Run, batches, clear_jax_caches, data, default_run,  # noqa: F401
                  fitted_model, init, jax_fit, reference_noise, torch_fit)
from parity_tests.engine.sides.example_sides import example_run, exchange_opt_state, raise_first_failure


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
        check(r.step_losses, expected, where=cell.where(run), rung=1, tol=tolerance(cell.dtype, 1),
              quantity=f"{name}.fit step losses vs torch loss on batch_order's batches", step_axis=True)
    d = default_run(ex)
    for name, backend, fit in (("torch", tt, torch_fit), ("jaxport", jt, jax_fit)):
        own = backend.loss_and_grads(ex, init(ex), x, y, **cell.kw)[0]
        check(fit(cell, d).step_losses[0], own, where=cell.where(d), rung=1, tol=tolerance(cell.dtype, 1),
              quantity=f"{name}.fit first step loss == {name}.loss_and_grads at init")


def _compared(step: int, total: int) -> bool:
    """float32 steps need their measured tolerance where the result term alone is
    exceeded: `make test` compares a slice of rung 5, the first 100 steps, 50 from the
    middle and the last 50; `make report` (JAXPORT_REPORT) and JAXPORT_FULL=1 every
    step. float64 steps are always all compared."""
    return step < 100 or total // 2 <= step < total // 2 + 50 or step >= total - 50


def port_run(cell: Cell, run: Run | None = None, max_steps: int | None = None):
    """check_port's run over the example's sides (sides/example_sides.py): torchref's
    model, loss and optimizer against jaxport's compiled step, the run's batches."""
    run = run or default_run(cell.example)
    x, y = data(cell.example, run.seed)
    steps = [idx for _, idx in batches(run.order(len(x)), run.config.batch_size)][:max_steps]
    every = cell.dtype == "float64" or os.environ.get("JAXPORT_REPORT") or os.environ.get("JAXPORT_FULL")
    # float32: the measured bound alone, which every correct step of these examples holds
    # (JAXPORT_FULL=1 on MKL's AUTO, AVX2 and COMPATIBLE): the fallback against float64
    # let the planted bias correction in float32 pass rungs 2-5 (port_exact.py)
    return example_run(cell, run, x, y, steps, init(cell.example, run), compared=None if every else _compared,
                       float64_fallback=False)


def _rung(number: int, cell: Cell, run: Run | None, max_steps: int | None = None):
    r = port_run(cell, run, max_steps)
    port_rungs.RUNGS[number](r)
    raise_first_failure(r)
    return r


def rung2_loss_at_init(cell: Cell, run: Run | None = None) -> None:
    """The loss and the model's output on the whole data at the run's initial weights."""
    _rung(2, cell, run)


def rung3_gradients_at_init(cell: Cell, run: Run | None = None) -> None:
    _rung(3, cell, run)


def rung4_one_step(cell: Cell, run: Run | None = None) -> None:
    """train_step from the shared init and a fresh optimizer, then a second step from
    torch's state (parameters and optimizer state fed to both)."""
    _rung(4, cell, run)


def rung5_teacher_forced(cell: Cell, run: Run | None = None, max_steps: int | None = None) -> int:
    """Every step of the run from torch's state: torch's own loop (torchref's model,
    optimizer and loss) is the teacher; jaxport's compiled step starts each step from
    the teacher's parameters and optimizer state (float32 in `make test`: a slice of the
    steps, see _compared). Then the sides themselves: the teacher's losses are
    torchref.fit's, and both sides' first two steps are the backends' train_step, bit
    for bit. Returns the number of steps run."""
    run = run or default_run(cell.example)
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
        opt = r.side.optimizer(model, state[1], state[2])
        t = r.side.step(model, opt, xb, yb)
        j = r.cand.step(state, xb, yb)
        params = {rename[k]: v for k, v in state[0].items()}
        moments = exchange_opt_state(state[1], state[2], rename)
        api_t = tt.train_step(ex, params, moments, xb, yb, run.config, **cell.kw)
        api_j = jt.train_step(ex, params, moments, xb, yb, run.config, **cell.kw)
        where = dict(where=cell.where(run), rung=5, tol=EXACT, step=step)
        check({rename[k]: v for k, v in t[2].items()}, api_t[2], quantity="(self) torch teacher == torchref.train_step",
              **where)
        check({k: v for k, v in j[2].items() if k in api_j[2]}, api_j[2],
              quantity="(self) jaxport's side == jaxport.train_step", **where)
        state = t[2:]


LADDER = {1: rung1_identical_inputs, 2: rung2_loss_at_init, 3: rung3_gradients_at_init,
          4: rung4_one_step, 5: rung5_teacher_forced, 6: rung6_free_running, 7: rung7_fitted_model}
