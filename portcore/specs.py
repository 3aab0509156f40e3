"""The examples' shared specs: names, layers, hyperparameters, data and batch order.

Everything is numpy float64 so that both backends start from the same bits and cast
to the dtype under test themselves.
"""
from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EXAMPLES = ("bce_from_primitives", "linear_regression", "logistic_regression",
            "neural_network", "tensor_interop")
TRAINABLE = ("linear_regression", "logistic_regression", "neural_network")
DEMOS = ("bce_from_primitives", "tensor_interop")
DTYPES = ("float32", "float64")
DEVICES = ("cpu", "gpu")
BACKENDS = ("torch", "jax")

# The BCE demo's logits and labels, and the interop demo's list (from the tutorial).
BCE_LOGITS = (-4.5, 0.7, 3.3)
BCE_LABELS = (1.0, 0.0, 1.0)
BCE_EXPECTED = 1.8834                      # the tutorial's printed value, 4 decimals
INTEROP_LIST = ((11, 12, 13), (21, 22, 23), (31, 32, 33))

IRIS_CSV = Path(__file__).with_name("data") / "Iris.csv"

# (name, in_features, out_features) per nn.Linear, in the class model's names.
LAYERS = {
    "linear_regression": (("linear", 1, 1),),
    "logistic_regression": (("linear", 2, 1),),
    "neural_network": (("hidden_1", 1, 200), ("hidden_2", 200, 100), ("output", 100, 1)),
}
# nn.Sequential numbers its children; the ReLUs take indices 1 and 3.
SEQUENTIAL_INDEX = {"hidden_1": 0, "hidden_2": 2, "output": 4}


def forms(example: str) -> tuple[str, ...]:
    """How the model can be built: as a class, and for the network also as a Sequential."""
    return ("class", "sequential") if example == "neural_network" else ("class",)


def check_form(example: str, form: str) -> None:
    if form not in forms(example):
        raise ValueError(f"{example} has no {form!r} form (forms: {', '.join(forms(example))})")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run. Frozen and hashable: jaxport keys its
    compiled programs on it."""
    epochs: int
    batch_size: int
    lr: float
    optimizer: str               # "sgd" | "adam"
    momentum: float = 0.0        # SGD only
    betas: tuple = (0.9, 0.999)  # Adam only; torch's defaults
    eps: float = 1e-8            # Adam only; added outside the square root in both
    shuffle: bool = False

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


# The tutorial's settings, which are also the command line's defaults.
DEFAULTS = {
    "linear_regression": TrainConfig(epochs=100, batch_size=100, lr=0.2, optimizer="sgd"),
    "logistic_regression": TrainConfig(epochs=100, batch_size=100, lr=0.2, optimizer="sgd"),
    "neural_network": TrainConfig(epochs=1000, batch_size=100, lr=0.01, optimizer="adam"),
}
DEFAULT_SEED = 0


def param_shapes(example: str) -> dict[str, tuple[int, ...]]:
    """PyTorch state_dict names and shapes of the class model: weight is (out, in)."""
    shapes = {}
    for name, n_in, n_out in LAYERS[example]:
        shapes[f"{name}.weight"] = (n_out, n_in)
        shapes[f"{name}.bias"] = (n_out,)
    return shapes


def _rng(seed: int, purpose: int) -> np.random.Generator:
    # One stream per purpose, so that e.g. shuffling does not change the data noise.
    return np.random.default_rng([seed, purpose])


_DATA, _INIT, _ORDER = 0, 1, 2


def make_data(example: str, seed: int = DEFAULT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Inputs x (N, features) and targets y (N, 1), float64.

    The tutorial's noise is torch.rand, uniform on [0, 1), although its text says
    Gaussian; we follow the code.
    """
    rng = _rng(seed, _DATA)
    if example == "linear_regression":
        x = np.linspace(-1.0, 1.0, 100)[:, None]                    # (100, 1)
        return x, 5.0 + 5.0 * x + 5.0 * rng.random(x.shape)
    if example == "logistic_regression":
        return load_iris()
    if example == "neural_network":
        x = np.linspace(-10.0, 10.0, 100)[:, None]                  # (100, 1)
        return x, np.sin(x) + 0.5 * rng.random(x.shape)
    raise KeyError(f"{example!r} has no training data")


def load_iris() -> tuple[np.ndarray, np.ndarray]:
    """Rows 1-100 of Iris: (SepalLengthCm, SepalWidthCm); setosa 0, versicolor 1."""
    xs, ys = [], []
    with open(IRIS_CSV, newline="") as f:
        for row in csv.DictReader(f):
            if row["Species"] not in ("Iris-setosa", "Iris-versicolor"):
                continue
            xs.append((float(row["SepalLengthCm"]), float(row["SepalWidthCm"])))
            ys.append(0.0 if row["Species"] == "Iris-setosa" else 1.0)
    return np.array(xs), np.array(ys)[:, None]                      # (100, 2), (100, 1)


def shared_init(example: str, seed: int = DEFAULT_SEED) -> dict[str, np.ndarray]:
    """Initial weights both backends can load, drawn like nn.Linear's default init.

    kaiming_uniform(a=sqrt(5)) has bound gain*sqrt(3/fan_in) with gain sqrt(1/3), i.e.
    1/sqrt(fan_in), the same bound as the bias: every entry is U(-b, b).
    """
    rng = _rng(seed, _INIT)
    params = {}
    for name, n_in, n_out in LAYERS[example]:
        bound = 1.0 / np.sqrt(n_in)
        params[f"{name}.weight"] = rng.uniform(-bound, bound, size=(n_out, n_in))
        params[f"{name}.bias"] = rng.uniform(-bound, bound, size=(n_out,))
    return params


def torch_style_init(example: str, rng_seed: int) -> dict[str, np.ndarray]:
    """nn.Linear's default distribution, U(+-1/sqrt(fan_in)) for weight and bias, drawn
    layer by layer from numpy.random.default_rng(rng_seed): other initial weights of
    the same kind as torch's (`python -m examples init`; the portability runs)."""
    rng, params, shapes = np.random.default_rng(rng_seed), {}, param_shapes(example)
    for name, shape in shapes.items():
        fan_in = shapes[name.rsplit(".", 1)[0] + ".weight"][1]
        params[name] = rng.uniform(-1 / np.sqrt(fan_in), 1 / np.sqrt(fan_in), size=shape)
    return params


def batch_order(n: int, epochs: int, shuffle: bool, seed: int = DEFAULT_SEED) -> np.ndarray:
    """Sample indices (epochs, n) in the order a DataLoader visits them.

    shuffle=False: 0..n-1 every epoch, like DataLoader(shuffle=False). shuffle=True: one
    permutation per epoch from the shared generator. Batches are consecutive slices of
    each row; the last one is partial when batch_size does not divide n
    (drop_last=False).
    """
    if not shuffle:
        return np.tile(np.arange(n), (epochs, 1))
    rng = order_rng(seed)
    return np.stack([rng.permutation(n) for _ in range(epochs)]) if epochs else \
        np.zeros((0, n), dtype=np.int64)


def order_rng(seed: int = DEFAULT_SEED) -> np.random.Generator:
    """The generator of the shuffled batch order; schedule.EpochOrder draws from it lazily."""
    return _rng(seed, _ORDER)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def accuracy(probabilities: np.ndarray, y: np.ndarray) -> float:
    """Fraction of samples whose probability falls on the label's side of 0.5."""
    return float(np.mean((probabilities >= 0.5) == (y >= 0.5)))


@dataclass
class FitResult:
    """What a training run returns, the same from both backends (numpy, PyTorch names)."""
    step_losses: np.ndarray      # (epochs * steps_per_epoch,) loss of each step, before its update
    epoch_losses: np.ndarray     # (epochs,) mean of that epoch's step losses
    params: dict                 # fitted, PyTorch names and layout
    frames: np.ndarray | None    # (epochs, k) the animation's state at each epoch's start
    train_seconds: float
    compile_seconds: float = 0.0
    # Long runs (see portcore/schedule.py) keep the rows above for these epochs only;
    # None: every epoch.
    recorded_epochs: np.ndarray | None = None
    epochs_run: int | None = None            # fewer than asked when a diverged run stopped
    nonfinite_loss_step: int | None = None   # first step whose loss is inf or NaN, kept or not
