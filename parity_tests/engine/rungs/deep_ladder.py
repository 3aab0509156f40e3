"""The deep examples' (cnn, lstm, gru) runs and rungs 2-5: check_port's rungs
(port_rungs.py) over the examples' sides (sides/example_sides.py). Their models carry
state besides their parameters: BatchNorm's running statistics and the shared
dropout's step counter travel in the exchange format with the weights, so "parameters
and state after the update" compares them too, and dropout stays ON in training mode
(both backends drop the same units: portcore/dropout_hash.py).

Tolerances: check_port's. float64 the table's (parity.FLOAT64, relative 1e-10);
float32 the measured step bound, then, for a tensor outside it, the error against torch
in float64 from the same state (bounds/port_exact.py).
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

import numpy as np

from parity_tests.engine.rungs import port_rungs
from parity_tests.engine.sides.example_sides import example_run, raise_first_failure
from parity_tests.engine.sides.runs import batches
from portcore import registry, specs, weights


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


def _compared(step: int, steps: int) -> bool:
    """`make test` compares the first and last three steps of rung 5 (the last on the
    epoch's partial batch), JAXPORT_FULL or JAXPORT_REPORT every one."""
    return bool(os.environ.get("JAXPORT_FULL") or os.environ.get("JAXPORT_REPORT")) or step < 3 or step >= steps - 3


def port_run(cell: DeepCell, run: DeepRun | None = None, steps: int = 2):
    """check_port's run over the example's sides (sides/example_sides.py): the run's
    first `steps` batches, eval-mode outputs on the held-out images."""
    run = run or default_run(cell.example)
    x, y = data(cell.example, seed=run.seed)
    return example_run(cell, run, x, y, first_batches(cell.example, steps, run), init(cell.example, run),
                       eval_x=data(cell.example, held_out=True, seed=run.seed)[0], compared=_compared)


def _rung(number: int, cell: DeepCell, run: DeepRun | None, steps: int = 2):
    r = port_run(cell, run, steps)
    port_rungs.RUNGS[number](r)
    raise_first_failure(r)
    return r


def rung2_loss_at_init(cell: DeepCell, run: DeepRun | None = None) -> None:
    """Training-mode loss on the data (batch statistics, dropout at step 0), and the
    eval-mode logits on the held-out images (running statistics, no dropout)."""
    _rung(2, cell, run)


def rung3_gradients_at_init(cell: DeepCell, run: DeepRun | None = None) -> None:
    _rung(3, cell, run)


def rung4_one_step(cell: DeepCell, run: DeepRun | None = None) -> None:
    """A step from the initial weights with a fresh optimizer, then one from torch's state."""
    _rung(4, cell, run)


def rung5_teacher_forced(cell: DeepCell, run: DeepRun | None = None, steps: int | None = None) -> int:
    """The first `steps` steps of the run (default: its first epoch, whose last batch is
    partial when the batch size does not divide 1437), each from torch's state."""
    run = run or default_run(cell.example)
    steps = steps or specs.steps_per_epoch(len(data(cell.example, seed=run.seed)[0]), run.config.batch_size)
    return len(_rung(5, cell, run, steps).batches)


RUNGS = {2: rung2_loss_at_init, 3: rung3_gradients_at_init, 4: rung4_one_step, 5: rung5_teacher_forced}
