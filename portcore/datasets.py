"""The examples' data, numpy float64, each from its own seeded stream (specs.rng), so
that e.g. shuffling does not change the data noise. The tutorial's noise is torch.rand,
uniform on [0, 1), although its text says Gaussian; we follow the code."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from portcore import specs

DATA_DIR = Path(__file__).with_name("data")
IRIS_CSV = DATA_DIR / "Iris.csv"


def line(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x = linspace(-1, 1, 100) as a column; y = 5 + 5x + 5 U[0, 1)."""
    x = np.linspace(-1.0, 1.0, 100)[:, None]
    return x, 5.0 + 5.0 * x + 5.0 * specs.rng(seed, specs.DATA).random(x.shape)


def sine(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x = linspace(-10, 10, 100) as a column; y = sin x + 0.5 U[0, 1)."""
    x = np.linspace(-10.0, 10.0, 100)[:, None]
    return x, np.sin(x) + 0.5 * specs.rng(seed, specs.DATA).random(x.shape)


def iris(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows 1-100 of Iris: (SepalLengthCm, SepalWidthCm); setosa 0, versicolor 1. Fixed data:
    the seed is unused."""
    xs, ys = [], []
    with open(IRIS_CSV, newline="") as f:
        for row in csv.DictReader(f):
            if row["Species"] not in ("Iris-setosa", "Iris-versicolor"):
                continue
            xs.append((float(row["SepalLengthCm"]), float(row["SepalWidthCm"])))
            ys.append(0.0 if row["Species"] == "Iris-setosa" else 1.0)
    return np.array(xs), np.array(ys)[:, None]                      # (100, 2), (100, 1)


def bce_inputs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The BCE demo's logits and labels, from the tutorial."""
    return np.array(specs.BCE_LOGITS), np.array(specs.BCE_LABELS)
