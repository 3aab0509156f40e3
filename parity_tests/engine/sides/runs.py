"""What the examples' rungs run: cells, training configurations, the shared inputs, and
session caches of both backends' whole runs and of the reference's ensemble.

Torch's results are cached for the session (no planted bug touches torchref); jaxport's
are cached too, and example_sides.clear_jax_caches drops them with jaxport's own caches.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

import jaxport.training as jt
import torchref.training as tt
from portcore import registry, specs, weights

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
    """A training run: configuration, data seed, initial weights, and its label in the
    report; order from specs.

    init: "shared" (registry.shared_init of the seed), "torch-style:N" (nn.Linear's
    distribution drawn with numpy.random.default_rng(N)) or a weights file's path.
    jax_nudge: when not 0, jaxport starts from the initial weights moved by one ulp in
    a random direction drawn from this seed (a simulated machine whose rounding starts
    differing at once); torch always starts from the weights themselves.
    devices: both backends' fit run data parallel on that many devices (rungs 6-7;
    rungs 2-5 are single steps that do not depend on it); the reference
    ensemble stays one-device torch, so N devices are judged against one."""
    label: str
    config: specs.TrainConfig
    seed: int = SEED
    init: str = "shared"
    jax_nudge: int = 0
    devices: int = 1

    def order(self, n: int) -> np.ndarray:
        return specs.batch_order(n, self.config.epochs, self.config.shuffle, self.seed)


def default_run(example: str) -> Run:
    return Run("default", registry.get(example).defaults)


@functools.lru_cache(maxsize=None)
def data(example, seed=SEED, held_out=False):
    """The example's data, or its held-out rows (the deep examples' rung 7)."""
    return (registry.get(example).held_out if held_out else registry.get(example).data)(seed)


def init(example, run: Run | None = None) -> dict:
    """The run's initial weights (float64, exchange format)."""
    if run is None or run.init == "shared":
        return registry.shared_init(example, SEED if run is None else run.seed)
    if run.init.startswith("torch-style:"):
        return registry.torch_style_init(example, int(run.init.split(":", 1)[1]))
    return {k: np.asarray(v, np.float64) for k, v in weights.load(run.init, registry.exchange_shapes(example)).items()}


def jax_init(example, run: Run, dtype: str) -> dict:
    """jaxport's initial weights: the run's, or those moved one ulp (run.jax_nudge)."""
    params = init(example, run)
    if not run.jax_nudge:
        return params
    rng = np.random.default_rng([run.jax_nudge, 5])
    inf = np.array(np.inf, dtype)
    return {k: np.nextafter(v.astype(dtype), np.where(rng.random(v.shape) < 0.5, inf, -inf))
            for k, v in params.items()}


def batches(order: np.ndarray, batch_size: int):
    """The DataLoader's batches, in order: (step, indices)."""
    return enumerate(row[start:start + batch_size] for row in order for start in range(0, len(row), batch_size))


# ---- cached runs --------------------------------------------------------------------
_TORCH, _ENSEMBLES = {}, {}


def torch_fit(cell: Cell, run: Run) -> specs.FitResult:
    k = (cell, dataclasses.replace(run, jax_nudge=0))
    if k not in _TORCH:
        x, y = data(cell.example, run.seed)
        _TORCH[k] = tt.fit(cell.example, init(cell.example, run), x, y, run.order(len(x)), run.config,
                           devices=run.devices, **cell.kw)
    return _TORCH[k]


@functools.lru_cache(maxsize=None)             # jax_fit.cache_clear(): example_sides.clear_jax_caches
def jax_fit(cell: Cell, run: Run) -> specs.FitResult:
    x, y = data(cell.example, run.seed)
    return jt.fit(cell.example, jax_init(cell.example, run, cell.dtype), x, y, run.order(len(x)), run.config,
                  devices=run.devices, **cell.kw)


def reference_ensemble(cell: Cell, run: Run, build) -> tuple:
    """The torch ensemble of this cell and run (`build()`, bounds/ensemble.py), once: one
    device, jaxport's start as given. The Sequential form takes the class form's where
    that is built and torch's own runs of the two agree bit for bit."""
    run = dataclasses.replace(run, jax_nudge=0, devices=1)
    k = (cell, run)
    base = (dataclasses.replace(cell, form="class"), run)
    if k not in _ENSEMBLES and cell.form != "class" and base in _ENSEMBLES:
        ours, theirs = torch_fit(cell, run), torch_fit(*base)
        if np.array_equal(ours.step_losses, theirs.step_losses) and \
                all(np.array_equal(ours.params[n], theirs.params[n]) for n in ours.params):
            _ENSEMBLES[k] = _ENSEMBLES[base]
    if k not in _ENSEMBLES:
        _ENSEMBLES[k] = build()
    return _ENSEMBLES[k]
