"""The digits data of the deep examples (cnn, lstm, gru): UCI optical digits, 8x8 grey
levels 0-16 scaled /16 to [0, 1], and a fixed stratified split into 1437 training and
360 held-out images drawn from the shared seed. numpy only, like the rest of portcore.
"""
from __future__ import annotations

import functools
import gzip
from pathlib import Path

import numpy as np

from portcore import specs

DIGITS_CSV = Path(__file__).with_name("data") / "digits.csv.gz"
N_IMAGES, N_HELD_OUT, N_CLASSES = 1797, 360, 10
SIDE = 8                                   # 8x8 images
# One numpy stream per purpose (specs.rng): the split has its own, so that changing
# how weights or batch orders are drawn never moves an image between the two sets.
_SPLIT = 3


@functools.lru_cache(maxsize=1)
def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """All images (1797, 64) float64 in [0, 1] and labels (1797,) int64, file order."""
    with gzip.open(DIGITS_CSV, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)      # (1797, 65)
    if table.shape != (N_IMAGES, SIDE * SIDE + 1):
        raise ValueError(f"{DIGITS_CSV}: expected {N_IMAGES} rows of 65 integers, got {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    # /16 is exact in binary floating point: the pixels are the same bits in any dtype.
    return pixels / 16.0, labels


def stratified_split(labels: np.ndarray, held_out: int, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices), both sorted: every class keeps its share of
    the held-out set, rounded by largest remainder so the shares sum to `held_out`."""
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * held_out / len(labels)
    take = np.floor(quota).astype(np.int64)
    # the classes with the largest remainders take the images that rounding left over
    # (ties broken by class, so the split depends on nothing but the labels and the rng)
    order = np.lexsort((classes, -(quota - take)))
    take[order[:held_out - take.sum()]] += 1
    test = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:k]
                           for c, k in zip(classes, take)])
    test.sort()
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test


@functools.lru_cache(maxsize=None)
def split(seed: int = specs.DEFAULT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The fixed split for `seed`: (train indices (1437,), held-out indices (360,))."""
    _, labels = load_digits()
    return stratified_split(labels, N_HELD_OUT, specs.rng(seed, _SPLIT))


def make_digits(seed: int = specs.DEFAULT_SEED, held_out: bool = False, shape=(SIDE * SIDE,)
                ) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, *shape) float64, labels (N,) int64): the training set, or with
    held_out the 360 held-out images. shape (1, 8, 8) is the CNN's NCHW input, (8, 8)
    the RNNs' 8 rows of 8 pixels."""
    pixels, labels = load_digits()
    rows = split(seed)[1 if held_out else 0]
    return pixels[rows].reshape(len(rows), *shape).copy(), labels[rows].copy()

