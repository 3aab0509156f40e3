"""What bench and bench_parallel share: the workloads, their FLOPs, the text tables."""
from __future__ import annotations

import sys

import numpy as np

from portcore import registry, specs

SIZES = ("tutorial", "large")
# Large: 10,000 points in batches of 100, so 100 steps an epoch instead of the
# tutorial's 1; 20 epochs (2,000 steps) keep a torch eager run to a few seconds.
LARGE_N, LARGE_BATCH, LARGE_EPOCHS = 10_000, 100, 20
# The deep examples (whose tutorial batches are already 64 images): the same 10,000
# images in batches 8x the tutorial's (512), 10 epochs (200 steps): 8x the work a step.
DEEP_BATCH_SCALE, DEEP_LARGE_EPOCHS = 8, 10


def workload(example: str, size: str, seed: int = specs.DEFAULT_SEED):
    """(x, y, order, config) of one run, in numpy, so both backends get the same bits."""
    x, y = registry.make_data(example, seed)
    config = registry.get(example).defaults
    if size == "large":
        # The tutorial's points tiled to LARGE_N and shuffled once, so that every batch
        # is drawn from the whole data set like the tutorial's single full batch.
        rows = np.random.default_rng([seed, 99]).permutation(np.resize(np.arange(len(x)), LARGE_N))
        x, y = x[rows], y[rows]
        if registry.get(example).ladder == "deep":
            config = config.replace(epochs=DEEP_LARGE_EPOCHS, batch_size=config.batch_size * DEEP_BATCH_SCALE)
        else:
            config = config.replace(epochs=LARGE_EPOCHS, batch_size=LARGE_BATCH)
    return x, y, specs.batch_order(len(x), config.epochs, config.shuffle, seed), config


def matmul_flops(example: str, samples: int) -> int:
    """The layer kinds' forward FLOPs per sample; backward about twice the forward."""
    return 3 * samples * registry.get(example).flops()


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def align(rows: list, left: int) -> list[str]:
    """Text table lines: the first `left` columns left-aligned, the rest right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
            for row in rows]
