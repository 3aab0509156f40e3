"""Runs of any length in bounded memory: the batch order drawn chunk by chunk, and what a
FitResult keeps of a long run. Framework-neutral (numpy); both backends' `fit` use it the
same way, so a run gives the same record, chunk boundaries included, on either side.
"""
from __future__ import annotations

from dataclasses import dataclass, field

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

    Resuming (portcore/checkpoint.py): `start` epochs are done and `rng_state` is the
    generator's state after drawing them; the order is then epochs start .. epochs - 1,
    the rows the whole run would have drawn. `states` records, as chunks() goes, the
    generator's state at the end of each chunk, for the checkpoint written there.
    """
    n: int
    epochs: int
    shuffle: bool
    seed: int = specs.DEFAULT_SEED
    start: int = 0
    rng_state: dict | None = field(default=None, compare=False)
    states: dict = field(default_factory=dict, compare=False, repr=False)

    def __len__(self) -> int:
        return self.epochs - self.start

    def chunks(self, size: int, every: int | None = None):
        rng = specs.order_rng(self.seed) if self.shuffle else None
        if rng is not None and self.start:
            if self.rng_state is None:           # no state saved: draw the done epochs again
                for _ in range(self.start):
                    rng.permutation(self.n)
            else:
                rng.bit_generator.state = self.rng_state
        in_order = None
        for start, count in chunk_bounds(self.start, self.epochs, size, every):
            if rng is not None:
                chunk = np.stack([rng.permutation(self.n) for _ in range(count)])
                self.states[start + count] = rng.bit_generator.state
                yield chunk
            else:
                # The same array object for equal chunks, so jaxport uploads it once.
                if in_order is None or len(in_order) != count:
                    in_order = np.tile(np.arange(self.n), (count, 1))
                yield in_order


def chunk_bounds(start: int, end: int, size: int, every: int | None = None):
    """(first epoch, count) of each chunk of [start, end): at most `size` epochs, and
    with `every`, never across a multiple of it (a checkpoint is written there)."""
    e = start
    while e < end:
        stop = min(e + size, end)
        if every:
            stop = min(stop, (e // every + 1) * every)
        yield e, stop - e
        e = stop


def chunk_counts(start: int, end: int, size: int, every: int | None = None) -> set:
    """The distinct counts chunk_bounds gives (jaxport compiles one program for each),
    without walking a run of 10^8 epochs: the pattern repeats every `every` epochs, so
    the span up to the first multiple, one period and the tail hold every count."""
    if every and end - start > 2 * every:
        first = -(-start // every) * every
        last = first + (end - first) // every * every
        spans = [(start, first), (first, first + every), (last, end)]
    elif every:
        spans = [(start, end)]
    else:                           # chunks of `size`, and a shorter last one
        spans = [(start, min(end, start + size)), (start + (end - start) // size * size, end)]
    return {count for a, b in spans for _, count in chunk_bounds(a, b, size, every)}


def order_size(order) -> tuple[int, int]:
    """(epochs to run, N) of an EpochOrder or an (epochs, N) array."""
    if isinstance(order, EpochOrder):
        return len(order), order.n
    return np.shape(order)[0], np.shape(order)[1]


def order_chunks(order, size: int, every: int | None = None):
    """(count, N) arrays of consecutive epochs, `size` at most (and split at multiples of
    `every`), from either kind of order."""
    if isinstance(order, EpochOrder):
        yield from order.chunks(size, every)
        return
    order = np.asarray(order)
    for start, count in chunk_bounds(0, len(order), size, every):
        yield order[start:start + count]


def order_counts(order, size: int, every: int | None = None) -> set:
    """The distinct chunk lengths order_chunks will give."""
    start, end = (order.start, order.epochs) if isinstance(order, EpochOrder) else (0, len(order))
    return chunk_counts(start, end, size, every)


def order_state(order, epochs_run: int):
    """(the absolute epoch, the shuffling generator's state there or None) after
    `epochs_run` epochs of this run: what a checkpoint records."""
    if isinstance(order, EpochOrder):
        return order.start + epochs_run, order.states.get(order.start + epochs_run) if order.shuffle else None
    return epochs_run, None


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
