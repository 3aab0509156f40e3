"""The examples' two sides, for the rungs that check_port runs (rungs/port_rungs.py).

- The reference: port_torch.TorchSide over torchref's model of the example, with its
  loss and torchref.optim's optimizer from the configuration (the same module, loss and
  optimizer torchref.fit trains).
- The candidate: jaxport's own compiled train step (jaxport.training.Stepper: the
  example's loss, jaxport.optim's optimizer from the configuration, jaxport's
  converter), started from torch's state at every step. Both sides speak the exchange
  format (torch's names), so torch's results are compared as they are.

`example_run` builds a PortRun from them; the ladder's rungs 2-5 (ladder.py for the
tutorial's examples, deep_ladder.py for cnn, lstm and gru) are check_port's rungs over it.
"""
from __future__ import annotations

import numpy as np

import jaxport.training as jt
import torchref
import torchref.optim as torch_optim
import torchref.training as tt
from parity_tests.engine import parity
from parity_tests.engine.rungs.port_rungs import PortRun
from parity_tests.engine.sides.port_torch import TorchSide
from parity_tests.engine.sides.teacher import jax_stepper
from portcore import registry


class JaxportSide:
    """jaxport's compiled step as rungs 2-5's candidate (see port_candidate.py for the
    protocol): moments cross as torch's ("exp_avg/fc.weight", and Adam's "step")."""
    compares_moments = True

    def __init__(self, cell, config, init: dict):
        self.cell, self.init, self.config = cell, init, config
        self.stepper = jax_stepper(cell, config)         # compiled once per cell and configuration
        self.names = set(registry.exchange_shapes(cell.example))
        self.state_paths = self.names - set(registry.param_shapes(cell.example))  # running stats, dropout step

    def texts(self, flat: dict, moment: str | None = None) -> dict:
        return {(f"{k} ({moment})" if moment else k): v for k, v in flat.items()}

    def layer_of(self, name) -> str | None:
        return name.split(" (")[0].rsplit(".", 1)[0] if name else None

    def fresh(self) -> None:
        pass

    def outputs(self, x) -> np.ndarray:
        return jt.predict(self.cell.example, self.init, x, **self.cell.kw)

    def view(self, arrays: dict, moments: dict) -> tuple:
        return ({k: v for k, v in arrays.items() if k in self.names},
                {f"{n} ({key})": v for key, d in moments.items() for n, v in d.items()})

    def step(self, state: tuple, x, y) -> tuple:
        arrays, moments, count = state
        opt = {f"{key}/{n}": v for key, d in moments.items() for n, v in d.items()}
        if "exp_avg" in moments:                         # SGD's state has no count
            opt["step"] = np.asarray(float(count))
        self.stepper.load({k: v for k, v in arrays.items() if k in self.names}, opt)
        loss, grads, after, opt_after = self.stepper.step(x, y)
        moments_after = {}
        for key, value in opt_after.items():
            if "/" in key:
                moment, name = key.split("/", 1)
                moments_after[f"{name} ({moment})"] = value
        return loss, grads, after, moments_after


def torch_side(cell, config, init: dict) -> TorchSide:
    """torchref's model of the example at `init`, its loss and optimizer."""
    ex = cell.example
    model = tt.build_model(ex, init, dtype=cell.dtype, device=cell.device, form=getattr(cell, "form", "class"))
    integer = np.issubdtype(np.dtype(registry.get(ex).label_dtype(cell.dtype)), np.integer)
    return TorchSide(model.train(), cell.dtype, torchref.example_module(ex).loss_fn,
                     lambda params: torch_optim.make_optimizer(config, params), integer,
                     dropout=registry.get(ex).ladder == "deep")


def example_run(cell, run, x, y, batches: list, init: dict, **options) -> PortRun:
    """check_port's PortRun over an example's two sides (options: eval_x, compared)."""
    cast = {k: np.asarray(v).astype(cell.dtype) if np.issubdtype(np.asarray(v).dtype, np.floating) else v
            for k, v in init.items()}
    side = torch_side(cell, run.config, cast)
    return PortRun(side, JaxportSide(cell, run.config, cast), x, y, batches, str(cell), cell.example,
                   where=cell.where(run), **options)


def raise_first_failure(run: PortRun) -> None:
    """The ladder's way: the rung's rows into the session's record, and its first
    failure as the ParityError a test sees."""
    parity.keep(run.record)
    if run.failures:
        raise parity.ParityError(run.failures[0]["message"])
