"""The examples' two sides, for the rungs that check_port runs (rungs/port_rungs.py).

- The reference: port_torch.TorchSide over torchref's model of the example, with its
  loss and torchref.optim's optimizer from the configuration (the same module, loss and
  optimizer torchref.fit trains).
- The candidate: jaxport's own compiled train step (jaxport.training.Stepper: the
  example's loss, jaxport.optim's optimizer from the configuration, jaxport's
  converter), started from torch's state at every step. Both sides speak the exchange
  format (torch's names), so torch's results are compared as they are.

- The whole runs (rungs 6-7, ExampleRuns): torchref.fit and jaxport.training.fit (its
  compiled whole-run scan, the partial batch's padding mask, data parallel on the run's
  devices, its start moved an ulp for a simulated machine), and torch's ensemble; each
  cached for the session (sides/runs.py).

`example_run` builds a PortRun from them; the ladder's rungs 2-7 (ladder.py) are
check_port's rungs over it.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

import jaxport.training as jt
import torchref
import torchref.convert as tc
import torchref.optim as torch_optim
import torchref.training as tt
from parity_tests.engine import parity
from parity_tests.engine.bounds import ensemble
from parity_tests.engine.rungs.port_rungs import PortRun
from parity_tests.engine.sides import runs
from parity_tests.engine.sides.port_torch import TorchSide
from portcore import registry


@functools.lru_cache(maxsize=None)
def jax_stepper(cell, config) -> jt.Stepper:
    """One per (cell, configuration), reused across runs: building one traces its step."""
    return jt.stepper(cell.example, config, None, **cell.kw)


def clear_jax_caches() -> None:
    """Forget every compiled jaxport function, step and result (before and after a
    planted bug). jax's own caches can stay: they are keyed by function objects, and
    these are new."""
    jt.clear_caches()
    runs.jax_fit.cache_clear()
    jax_stepper.cache_clear()


def exchange_opt_state(moments: dict, count: int, rename: dict) -> dict:
    """torch's moments ({"exp_avg": {module name: array}}) and step count as the exchange
    format's optimizer state ("exp_avg/hidden.weight", and Adam's "step")."""
    opt = {f"{key}/{rename[n]}": v for key, d in moments.items() for n, v in d.items()}
    if "exp_avg" in moments:                             # SGD's state has no count
        opt["step"] = np.asarray(float(count))
    return opt


class JaxportSide:
    """jaxport's compiled step as rungs 2-5's candidate (see port_candidate.py for the
    protocol). Its own names are the exchange format's; rename maps torchref's module
    names onto them (the Sequential form's "0.weight" is "hidden.weight"). Moments
    cross as the exchange format's ("exp_avg/hidden.weight", and Adam's "step")."""
    compares_moments = True

    def __init__(self, cell, config, init: dict, rename: dict):
        self.cell, self.init, self.rename = cell, init, rename
        self.back = {v: k for k, v in rename.items()}
        self.stepper = jax_stepper(cell, config)         # compiled once per cell and configuration
        self.state_paths = set(rename.values()) - set(registry.param_shapes(cell.example))  # running stats, dropout step

    def layer_of(self, name) -> str | None:
        return name.split(" (")[0].rsplit(".", 1)[0] if name else None

    def fresh(self) -> None:
        pass

    def outputs(self, x) -> np.ndarray:
        return jt.predict(self.cell.example, self.init, x, **self.cell.kw)

    def loss_and_grads(self, arrays: dict, x, y) -> tuple:
        """Through jaxport's API (its converter both ways, as a user calls it), not the
        stepper's fast path: a transpose missing in convert.to_numpy fails rung 3."""
        # the exchange format holds every entry as a float (the dropout step too)
        params = {k: np.asarray(v, self.cell.dtype) for k, v in self.view(arrays, {})[0].items()}
        loss, grads = jt.loss_and_grads(self.cell.example, params, x, y, **self.cell.kw)
        return loss, {self.back[k]: v for k, v in grads.items()}

    def view(self, arrays: dict, moments: dict) -> tuple:
        return ({self.rename[k]: v for k, v in arrays.items() if k in self.rename},
                {f"{self.rename[n]} ({key})": v for key, d in moments.items() for n, v in d.items()})

    def split(self, arrays: dict) -> tuple[dict, dict]:
        return self.fitted(self.view(arrays, {})[0])

    def fitted(self, params: dict) -> tuple[dict, dict]:
        return ({k: v for k, v in params.items() if k not in self.state_paths},
                {k: v for k, v in params.items() if k in self.state_paths})

    def fitted_model(self, params: dict, x, y) -> tuple:
        """jaxport's eval-mode predictions, and their loss by the example's loss function
        in float64: rung 7 scores the fitted model (the loss itself is rung 2's)."""
        predictions = jt.predict(self.cell.example, params, x, **self.cell.kw)
        loss = torchref.example_module(self.cell.example).loss_fn
        y = torch.as_tensor(np.array(y, np.int64 if np.issubdtype(np.asarray(y).dtype, np.integer) else np.float64))
        return predictions, float(loss(torch.as_tensor(np.array(predictions, np.float64)), y))

    def step(self, state: tuple, x, y) -> tuple:
        arrays, moments, count = state
        self.stepper.load(self.view(arrays, {})[0], exchange_opt_state(moments, count, self.rename))
        loss, grads, after, opt_after = self.stepper.step(x, y)
        pieces = (key.split("/", 1) + [value] for key, value in opt_after.items() if "/" in key)
        moments_after = {f"{name} ({moment})": value for moment, name, value in pieces}
        return loss, {self.back[k]: v for k, v in grads.items()}, after, moments_after


def torch_side(cell, config, init: dict) -> TorchSide:
    """torchref's model of the example at `init`, its loss and optimizer."""
    ex = cell.example
    model = tt.build_model(ex, init, dtype=cell.dtype, device=cell.device, form=cell.form)
    integer = np.issubdtype(np.dtype(registry.get(ex).label_dtype(cell.dtype)), np.integer)
    return TorchSide(model.train(), cell.dtype, torchref.example_module(ex).loss_fn,
                     lambda params: torch_optim.make_optimizer(config, params), integer,
                     dropout=registry.get(ex).ladder == "deep")


def exchange_names(cell, model) -> dict:
    """{torchref module name: exchange name} of the arrays that cross the API."""
    exchange = {id(t): n for n, t in tc.named_state(model, cell.example, cell.form).items()}
    return {n: exchange[id(t)] for n, t in [*model.named_parameters(), *model.named_buffers()] if id(t) in exchange}


class ExampleRuns:
    """Rungs 6-7's whole runs of an example, as its users run them (free_runs.py's
    `programs`): torchref.fit, jaxport.training.fit and torch's ensemble over the
    run's batches, all from the run's start."""

    def __init__(self, cell, run, side: TorchSide, cand: JaxportSide, x, y):
        self.cell, self.run, self.side, self.cand, self.x, self.y = cell, run, side, cand, x, y
        self.batches = [idx for _, idx in runs.batches(run.order(len(x)), run.config.batch_size)]

    def reference(self) -> tuple:
        r = runs.torch_fit(self.cell, self.run)
        return r.step_losses, {self.cand.back[k]: v for k, v in r.params.items()}

    def candidate(self) -> tuple:
        r = runs.jax_fit(self.cell, self.run)
        return r.step_losses, r.params

    def ensemble(self) -> tuple:
        """One per cell and run (one device, jaxport's start as given), in the exchange
        names; the Sequential form reuses the class form's where torch's own runs of
        the two agree bit for bit."""
        def build():
            losses, fitted = ensemble.members(self.side, self.x, self.y, self.batches)
            return losses, [{self.cand.rename[k]: v for k, v in a.items()} for a in fitted]
        losses, fitted = runs.reference_ensemble(self.cell, self.run, build)
        return losses, [{self.cand.back[k]: v for k, v in a.items()} for a in fitted]


def example_run(cell, run, x, y, batches: list, init: dict, **options) -> PortRun:
    """check_port's PortRun over an example's two sides (options: PortRun's eval_x,
    eval_y, compared, float64_fallback), its whole runs those of ExampleRuns."""
    cast = {k: np.asarray(v).astype(cell.dtype) if np.issubdtype(np.asarray(v).dtype, np.floating) else v
            for k, v in init.items()}
    side = torch_side(cell, run.config, cast)
    cand = JaxportSide(cell, run.config, cast, exchange_names(cell, side.torch_model))
    return PortRun(side, cand, x, y, batches, str(cell), registry.get(cell.example).loss, where=cell.where(run),
                   programs=ExampleRuns(cell, run, side, cand, x, y), **options)


def raise_first_failure(run: PortRun) -> None:
    """The ladder's way: the rung's rows into the session's record, and its first
    failure as the ParityError a test sees."""
    parity.keep(run.record)
    if run.failures:
        raise parity.ParityError(run.failures[0]["message"])
