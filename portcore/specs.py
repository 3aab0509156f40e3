"""What every example shares: the training configuration, the batch order, the seeded
streams, and what a run returns. Per-example facts are in registry.py.

Everything is numpy float64 so that both backends start from the same bits and cast
to the dtype under test themselves.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

DTYPES = ("float32", "float64")
DEVICES = ("cpu", "gpu")
BACKENDS = ("torch", "jax")

# The BCE demo's logits and labels, and the interop demo's list (from the tutorial).
BCE_LOGITS = (-4.5, 0.7, 3.3)
BCE_LABELS = (1.0, 0.0, 1.0)
BCE_EXPECTED = 1.8834                      # the tutorial's printed value, 4 decimals
INTEROP_LIST = ((11, 12, 13), (21, 22, 23), (31, 32, 33))

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


DEFAULT_SEED = 0
DATA, INIT, ORDER = 0, 1, 2      # the purposes of rng's streams


def rng(seed: int, purpose: int) -> np.random.Generator:
    """One stream per purpose, so that e.g. shuffling does not change the data noise."""
    return np.random.default_rng([seed, purpose])


def batch_order(n: int, epochs: int, shuffle: bool, seed: int = DEFAULT_SEED) -> np.ndarray:
    """Sample indices (epochs, n) in the order a DataLoader visits them.

    shuffle=False: 0..n-1 every epoch, like DataLoader(shuffle=False). shuffle=True: one
    permutation per epoch from the shared generator. Batches are consecutive slices of
    each row; the last one is partial when batch_size does not divide n
    (drop_last=False).
    """
    if not shuffle:
        return np.tile(np.arange(n), (epochs, 1))
    generator = order_rng(seed)
    return np.stack([generator.permutation(n) for _ in range(epochs)]) if epochs else \
        np.zeros((0, n), dtype=np.int64)


def order_rng(seed: int = DEFAULT_SEED) -> np.random.Generator:
    """The generator of the shuffled batch order; schedule.EpochOrder draws from it lazily."""
    return rng(seed, ORDER)


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
