"""The parity ladder's single-computation rungs for the deep examples (cnn, lstm, gru),
whose models carry state besides their parameters: BatchNorm's running statistics and
the shared dropout's step counter travel in the exchange format with the weights, so
"parameters after the update" compares them too, and dropout stays ON in training mode
(both backends drop the same units: portcore/dropout_hash.py).

Tolerances: float64 the table's (parity.FLOAT64, relative 1e-10). float32 measured per
computation against the reference's own rounding: Float32Bound = 4 x the largest
difference between torch in float32 and torch in float64 on the same inputs and
state, per tensor, + 4 float32 ulps of the tensor's largest entry.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

import numpy as np

import jaxport.training as jt
import torchref.training as tt
from parity_tests.engine.parity import check, tolerance
from portcore import registry, specs, weights
from parity_tests.engine.sides.runs import batches

U32 = 2.0 ** -24


@dataclass(frozen=True)
class DeepRun:
    """A run of a deep example: its configuration, data seed and initial weights
    ("shared": registry.shared_init of the seed, or a weights file)."""
    config: specs.TrainConfig
    seed: int = specs.DEFAULT_SEED
    init: str = "shared"
    label: str = "default"


def default_run(example) -> DeepRun:
    return DeepRun(registry.get(example).defaults)


@dataclass(frozen=True)
class DeepCell:
    example: str
    dtype: str
    device: str = "cpu"

    @property
    def kw(self) -> dict:
        return dict(dtype=self.dtype, device=self.device)

    def where(self, run: DeepRun | None = None) -> dict:
        return dict(example=self.example, form="class", dtype=self.dtype, device=self.device,
                    config=run.label if run else "default")

    def __str__(self):
        return f"{self.example}-{self.dtype}-{self.device}"


@dataclass
class Float32Bound:
    """parity.check's tolerance for a float32 computation: per tensor, 4 x torch's own
    float32 error (against torch float64 from the same float32 inputs) + 4 ulps."""
    error: dict                     # name -> max |torch32 - torch64| over the tensor
    reference: dict                 # name -> torch float64's values

    def allowed(self, expected, name=None, step_axis=False):
        ref = np.abs(np.asarray(self.reference[name or ""], np.float64))
        return 4.0 * self.error[name or ""] + 4.0 * U32 * (ref.max() if ref.size else 0.0)

    def __str__(self):
        return "4 x torch float32's own error vs float64 + 4 ulps of the tensor's largest entry"


def _as_dict(value) -> dict:
    return value if isinstance(value, dict) else {"": np.asarray(value)}


def bound(cell: DeepCell, t32, t64):
    """The tolerance of one computation: float64 the table's; float32 measured."""
    if cell.dtype == "float64":
        return tolerance("float64", 2)
    a, b = _as_dict(t32), _as_dict(t64)
    return Float32Bound({k: float(np.max(np.abs(np.asarray(a[k], np.float64) - b[k]), initial=0.0)) for k in b},
                        {k: np.asarray(v, np.float64) for k, v in b.items()})


def data(example, held_out=False, seed=specs.DEFAULT_SEED):
    record = registry.get(example)
    return (record.held_out if held_out else record.data)(seed)


def init(example, run: DeepRun | None = None) -> dict:
    """The run's initial weights and state, float64 (exchange format)."""
    if run is None or run.init == "shared":
        return registry.shared_init(example, specs.DEFAULT_SEED if run is None else run.seed)
    return {k: np.asarray(v, np.float64) for k, v in
            weights.load(run.init, registry.exchange_shapes(example)).items()}


def first_batches(example, steps: int, run: DeepRun | None = None):
    """The first `steps` batches of the run, as index arrays."""
    run = run or default_run(example)
    config, n = run.config, len(data(example, seed=run.seed)[0])
    order = specs.batch_order(n, config.epochs, config.shuffle, run.seed)
    return [idx for _, idx in itertools.islice(batches(order, config.batch_size), steps)]


def cast(params, dtype):
    return {k: np.asarray(v).astype(dtype) for k, v in params.items()}


def _start(cell: DeepCell, run: DeepRun | None):
    run = run or default_run(cell.example)
    return run, cell.example, data(cell.example, seed=run.seed), cast(init(cell.example, run), cell.dtype)


def rung2_loss_at_init(cell: DeepCell, run: DeepRun | None = None) -> None:
    """Training-mode loss on the first batch (batch statistics, dropout at step 0), and
    the eval-mode logits on the held-out images (running statistics, no dropout)."""
    run, ex, (x, y), p = _start(cell, run)
    i = first_batches(ex, 1, run)[0]
    t = tt.loss_and_grads(ex, p, x[i], y[i], **cell.kw)[0]
    t64 = tt.loss_and_grads(ex, p, x[i], y[i], dtype="float64")[0]
    j = jt.loss_and_grads(ex, p, x[i], y[i], **cell.kw)[0]
    check(j, t, where=cell.where(run), rung=2, quantity="training-mode loss (dropout on)", tol=bound(cell, t, t64))
    xh = data(ex, held_out=True, seed=run.seed)[0]
    t, t64 = tt.predict(ex, p, xh, **cell.kw), tt.predict(ex, p, xh, dtype="float64")
    check(jt.predict(ex, p, xh, **cell.kw), t, where=cell.where(run), rung=2,
          quantity="eval-mode logits on the held-out images", tol=bound(cell, t, t64))


def rung3_gradients_at_init(cell: DeepCell, run: DeepRun | None = None) -> None:
    run, ex, (x, y), p = _start(cell, run)
    i = first_batches(ex, 1, run)[0]
    t = tt.loss_and_grads(ex, p, x[i], y[i], **cell.kw)[1]
    t64 = tt.loss_and_grads(ex, p, x[i], y[i], dtype="float64")[1]
    check(jt.loss_and_grads(ex, p, x[i], y[i], **cell.kw)[1], t, where=cell.where(run), rung=3,
          quantity="gradients (dropout on)", tol=bound(cell, t, t64))


def _opt64(opt: dict) -> dict:
    return {k: np.asarray(v, np.float64) for k, v in opt.items()}


def check_step(cell: DeepCell, run: DeepRun, params, opt, xb, yb, rung, step=None, prefix="") -> tuple:
    """One train_step on both backends from the same state; returns torch's result."""
    ex, config = cell.example, run.config
    copy = lambda d: {k: np.array(v) for k, v in (d or {}).items()}  # noqa: E731 (torch writes moments in place)
    t = tt.train_step(ex, params, copy(opt), xb, yb, config, **cell.kw)
    j = jt.train_step(ex, params, copy(opt), xb, yb, config, **cell.kw)
    t64 = tt.train_step(ex, cast(params, np.float64), _opt64(copy(opt)), xb, yb, config, dtype="float64") \
        if cell.dtype == "float32" else t
    kw = dict(where=cell.where(run), rung=rung, step=step)
    check(j[0], t[0], quantity=prefix + "loss", tol=bound(cell, t[0], t64[0]), **kw)
    check(j[1], t[1], quantity=prefix + "gradients", tol=bound(cell, t[1], t64[1]), **kw)
    check(j[2], t[2], quantity=prefix + "parameters and state (running stats, dropout step) after the update",
          tol=bound(cell, t[2], t64[2]), **kw)
    opt_t = {k: v for k, v in t[3].items()}
    opt_j = {k: j[3].get(k, np.zeros_like(v)) for k, v in opt_t.items()}
    check(opt_j, opt_t, quantity=prefix + "optimizer state after the update",
          tol=bound(cell, opt_t, {k: t64[3].get(k, np.zeros_like(v)) for k, v in opt_t.items()}), **kw)
    return t


def rung4_one_step(cell: DeepCell, run: DeepRun | None = None) -> None:
    """A step from the initial weights with a fresh optimizer, then one from torch's state."""
    run, ex, (x, y), p = _start(cell, run)
    first = first_batches(ex, 2, run)
    i0, i1 = first if len(first) == 2 else first * 2          # a one-step run: its batch twice
    t = check_step(cell, run, p, None, x[i0], y[i0], rung=4)
    check_step(cell, run, t[2], t[3], x[i1], y[i1], rung=4, prefix="step 2 from torch's state: ")


def rung5_teacher_forced(cell: DeepCell, run: DeepRun | None = None, steps: int | None = None) -> int:
    """The first `steps` steps of the run (default: its first epoch, whose last batch is
    partial when the batch size does not divide 1437), each from torch's state; `make
    test` compares the first and last three, JAXPORT_FULL or JAXPORT_REPORT every one."""
    run, ex, (x, y), p = _start(cell, run)
    steps = steps or specs.steps_per_epoch(len(x), run.config.batch_size)
    opt, batches = None, first_batches(ex, steps, run)
    every = os.environ.get("JAXPORT_FULL") or os.environ.get("JAXPORT_REPORT")
    for step, i in enumerate(batches):
        if every or step < 3 or step >= len(batches) - 3:
            _, _, p, opt = check_step(cell, run, p, opt, x[i], y[i], rung=5, step=step)
        else:                   # torch's own step carries the state to the next compared one
            _, _, p, opt = tt.train_step(ex, p, opt, x[i], y[i], run.config, **cell.kw)
    return len(batches)


RUNGS = {2: rung2_loss_at_init, 3: rung3_gradients_at_init, 4: rung4_one_step, 5: rung5_teacher_forced}
