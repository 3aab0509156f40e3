"""Runs of any length in bounded memory: the batch order drawn chunk by chunk, and what a
FitResult keeps of a long run. Framework-neutral (numpy); both backends' `fit` use it the
same way, so a run gives the same record, chunk boundaries included, on either side.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from portcore import specs

# A run of at most this many steps is one chunk (jaxport: one XLA program, as before);
# longer runs go CHUNK_STEPS at a time, so no array grows with the number of epochs.
CHUNK_STEPS = 2 ** 14
# A FitResult keeps the losses (and frames) of every epoch up to this many epochs, and
# of this many evenly spaced epochs (first and last included) beyond.
MAX_RECORDED_EPOCHS = 10_000


def chunk_epochs(n: int, batch_size: int) -> int:
    """Epochs per chunk for N samples in batches of batch_size."""
    return max(1, CHUNK_STEPS // specs.steps_per_epoch(n, batch_size))


@dataclass(frozen=True)
class EpochOrder:
    """specs.batch_order(n, epochs, shuffle, seed), drawn one chunk of epochs at a time.

    The shuffled rows come from the one generator that batch_order draws from, epoch
    after epoch, so concatenating the chunks gives batch_order's array bit for bit.
    Each call to chunks() starts the generator afresh: the same rows every time.
    """
    n: int
    epochs: int
    shuffle: bool
    seed: int = specs.DEFAULT_SEED

    def __len__(self) -> int:
        return self.epochs

    def chunks(self, size: int):
        rng = specs.order_rng(self.seed) if self.shuffle else None
        in_order = None
        for start in range(0, self.epochs, size):
            count = min(size, self.epochs - start)
            if rng is not None:
                yield np.stack([rng.permutation(self.n) for _ in range(count)])
            else:
                # The same array object for equal chunks, so jaxport uploads it once.
                if in_order is None or len(in_order) != count:
                    in_order = np.tile(np.arange(self.n), (count, 1))
                yield in_order


def order_size(order) -> tuple[int, int]:
    """(epochs, N) of an EpochOrder or an (epochs, N) array."""
    if isinstance(order, EpochOrder):
        return order.epochs, order.n
    return np.shape(order)[0], np.shape(order)[1]


def order_chunks(order, size: int):
    """(count, N) arrays of consecutive epochs, `size` at most, from either kind of order."""
    if isinstance(order, EpochOrder):
        yield from order.chunks(size)
        return
    order = np.asarray(order)
    for start in range(0, len(order), size):
        yield order[start:start + size]


def recorded_epochs(epochs: int) -> np.ndarray | None:
    """The epochs a FitResult keeps: None for all of them."""
    if epochs <= MAX_RECORDED_EPOCHS:
        return None
    return np.round(np.linspace(0, epochs - 1, MAX_RECORDED_EPOCHS)).astype(np.int64)


class Recorder:
    """Collects a run chunk by chunk: the kept epochs' losses and frames, and the first
    step whose loss is not finite, which is found in every chunk, kept or not."""

    def __init__(self, epochs: int, steps_per_epoch: int):
        self.keep = recorded_epochs(epochs)
        self.steps_per_epoch = steps_per_epoch
        self.epochs_run = 0
        self.nonfinite_loss_step = None
        self._losses, self._frames = [], []

    def rows(self, start: int, count: int) -> np.ndarray:
        """Which epochs of the chunk [start, start + count) to keep, 0-based in the chunk."""
        if self.keep is None:
            return np.arange(count)
        lo, hi = np.searchsorted(self.keep, [start, start + count])
        return self.keep[lo:hi] - start

    def add(self, losses: np.ndarray, frames: np.ndarray | None) -> None:
        """losses (count, steps) of the next chunk; frames of its kept epochs only."""
        losses = np.asarray(losses)
        if self.nonfinite_loss_step is None:
            bad = ~np.isfinite(losses.reshape(-1))
            if bad.any():
                self.nonfinite_loss_step = self.epochs_run * self.steps_per_epoch + int(np.argmax(bad))
        self._losses.append(losses[self.rows(self.epochs_run, len(losses))])
        if frames is not None:
            self._frames.append(np.asarray(frames))
        self.epochs_run += len(losses)

    def result(self, params: dict, train_seconds: float, compile_seconds: float = 0.0) -> specs.FitResult:
        losses = (np.concatenate(self._losses) if self._losses
                  else np.zeros((0, self.steps_per_epoch)))            # (kept epochs, steps)
        kept = None if self.keep is None else self.keep[self.keep < self.epochs_run]
        return specs.FitResult(
            step_losses=losses.reshape(-1),
            epoch_losses=losses.mean(axis=1) if losses.size else np.zeros(len(losses)),
            params=params,
            frames=np.concatenate(self._frames) if self._frames else None,
            train_seconds=train_seconds, compile_seconds=compile_seconds,
            recorded_epochs=kept, epochs_run=self.epochs_run,
            nonfinite_loss_step=self.nonfinite_loss_step)
