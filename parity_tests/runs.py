"""What the rungs run: the grid's cells, training configurations, the shared inputs, and
session caches of both backends' runs and of the measured float32 noise envelope.

Torch's results are cached for the session (no planted bug touches torchref); jaxport's
are cached too, and `clear_jax_caches` drops them together with jaxport's own caches.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

import jaxport.training as jt
import torchref.training as tt
from examples import specs
from parity import ENVELOPE_RUNS
from teacher import JaxStepper

SEED = specs.DEFAULT_SEED


@dataclass(frozen=True)
class Cell:
    example: str
    form: str
    dtype: str
    device: str

    @property
    def kw(self) -> dict:
        return dict(dtype=self.dtype, device=self.device, form=self.form)

    def where(self, run: "Run | None" = None) -> dict:
        return dict(example=self.example, form=self.form, dtype=self.dtype, device=self.device,
                    config=run.label if run else "default")

    def __str__(self):
        return f"{self.example}-{self.form}-{self.dtype}-{self.device}"


@dataclass(frozen=True)
class Run:
    """A training configuration and its label in the report; order from specs."""
    label: str
    config: specs.TrainConfig

    def order(self, n: int) -> np.ndarray:
        return specs.batch_order(n, self.config.epochs, self.config.shuffle, SEED)


def default_run(example: str) -> Run:
    return Run("default", specs.DEFAULTS[example])


@functools.lru_cache(maxsize=None)
def data(example):
    return specs.make_data(example, SEED)


def init(example) -> dict:
    return specs.shared_init(example, SEED)


# A grid of inputs for the fitted model's predictions: the plots' axes, widened.
def grid(example) -> np.ndarray:
    if example == "logistic_regression":
        a, b = np.meshgrid(np.linspace(3.5, 8.5, 21), np.linspace(1.0, 5.0, 17))
        return np.c_[a.ravel(), b.ravel()]                       # (357, 2)
    lo, hi = (-1.5, 1.5) if example == "linear_regression" else (-10.5, 10.5)
    return np.linspace(lo, hi, 211)[:, None]                     # (211, 1)


def batches(order: np.ndarray, batch_size: int):
    """The DataLoader's batches, in order: (step, indices)."""
    step = 0
    for row in order:
        for start in range(0, len(row), batch_size):
            yield step, row[start:start + batch_size]
            step += 1


# ---- cached runs --------------------------------------------------------------------
_TORCH, _JAX = {}, {}


def torch_fit(cell: Cell, run: Run, params=None, key="shared") -> specs.FitResult:
    k = (cell, run, key)
    if k not in _TORCH:
        x, y = data(cell.example)
        _TORCH[k] = tt.fit(cell.example, init(cell.example) if params is None else params,
                           x, y, run.order(len(x)), run.config, **cell.kw)
    return _TORCH[k]


def jax_fit(cell: Cell, run: Run) -> specs.FitResult:
    if (cell, run) not in _JAX:
        x, y = data(cell.example)
        _JAX[(cell, run)] = jt.fit(cell.example, init(cell.example), x, y, run.order(len(x)),
                                   run.config, **cell.kw)
    return _JAX[(cell, run)]


def clear_jax_caches() -> None:
    """Forget every compiled jaxport function and result (before and after a planted bug).
    jax's own caches can stay: they are keyed by function objects, and these are new."""
    getattr(jt, "_programs", {}).clear()
    for name in ("_step_fn", "_value_and_grad", "_loss_fn", "_forward"):
        fn = getattr(jt, name, None)
        if hasattr(fn, "cache_clear"):
            fn.cache_clear()
    _JAX.clear()
    JaxStepper.cache.clear()


def ulp_perturbations(params: dict, dtype: str) -> list[dict]:
    """The initial weights moved by one ulp in `dtype`, ENVELOPE_RUNS ways: all up, all
    down, then each weight up or down at random."""
    cast = {k: v.astype(dtype) for k, v in params.items()}
    inf = np.array(np.inf, dtype)
    runs = [{k: np.nextafter(v, inf) for k, v in cast.items()},
            {k: np.nextafter(v, -inf) for k, v in cast.items()}]
    for i in range(ENVELOPE_RUNS - 2):
        rng = np.random.default_rng([SEED, 99, i])
        runs.append({k: np.nextafter(v, np.where(rng.random(v.shape) < 0.5, inf, -inf)) for k, v in cast.items()})
    return runs[:ENVELOPE_RUNS]


def envelope(cell: Cell, run: Run) -> dict:
    """torch against itself with its initial weights one ulp away (ENVELOPE_RUNS runs):
    per step the running maximum over steps of |loss diff|, and the largest difference
    of each fitted parameter, of the final loss, the predictions and the accuracy."""
    k = (cell, run, "envelope")
    if k in _TORCH:
        return _TORCH[k]
    if cell.form != "class":           # the same arithmetic in another container: reuse
        base = Cell(cell.example, "class", cell.dtype, cell.device)
        ours, theirs = torch_fit(cell, run), torch_fit(base, run)
        if np.array_equal(ours.step_losses, theirs.step_losses) and \
                all(np.array_equal(ours.params[n], theirs.params[n]) for n in ours.params):
            _TORCH[k] = envelope(base, run)
            return _TORCH[k]
    ref = torch_fit(cell, run)
    ref_model = fitted_model(tt, cell, ref.params)
    env = {"loss": np.zeros_like(ref.step_losses, dtype=np.float64),
           "params": {n: 0.0 for n in ref.params}, "final loss": 0.0, "predictions": 0.0,
           "accuracy": 0.0, "runs": []}
    for i, params in enumerate(ulp_perturbations(init(cell.example), cell.dtype)):
        r = torch_fit(cell, run, params, key=f"ulp{i}")
        diff = np.abs(r.step_losses.astype(np.float64) - ref.step_losses)
        env["loss"] = np.maximum(env["loss"], np.maximum.accumulate(diff))
        env["runs"].append(diff)
        for n in ref.params:
            env["params"][n] = max(env["params"][n], float(np.abs(r.params[n] - ref.params[n]).max()))
        model = fitted_model(tt, cell, r.params)
        for q in ("final loss", "predictions", "accuracy"):
            if q in model:
                env[q] = max(env[q], float(np.max(np.abs(model[q] - ref_model[q]))))
    _TORCH[k] = env
    return env


def fitted_model(backend, cell: Cell, params: dict) -> dict:
    """Rung 7's quantities, evaluated by `backend` at `params`."""
    x, y = data(cell.example)
    out = {"final loss": backend.loss_and_grads(cell.example, params, x, y, **cell.kw)[0],
           "predictions": backend.predict(cell.example, params, grid(cell.example), **cell.kw)}
    if cell.example == "logistic_regression":
        out["accuracy"] = specs.accuracy(backend.predict(cell.example, params, x, **cell.kw), y)
    return out
