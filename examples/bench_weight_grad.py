"""jaxport/matmul.py's choice: a weight gradient x^T dy as the transposed copy plus
YNNPACK's dot against Eigen's dot over the rows, inside a compiled loop (float32).

    .venv/bin/python -m examples.bench_weight_grad

Prints microseconds per loop step, the median and range of 5 runs of 300 steps, and the
CPU time per wall second (about 2 where a library splits the dot over XLA's threads:
those vary most from run to run)."""
from __future__ import annotations

import statistics
import time

import jax

from jaxport.matmul import weight_grad_eigen, weight_grad_ynnpack

# rows, K (x's columns), N (dy's columns): the examples' weight gradients, tutorial size
# and large (batch 512): the network's hidden_2, the lstm's per step, the cnn's fc, the
# gru's over all steps, the lstm's per step at batch 512, the cnn's conv2 and conv1
SHAPES = ((100, 200, 100), (64, 73, 256), (64, 128, 10), (512, 128, 10), (512, 8, 192),
          (512, 64, 192), (512, 73, 256), (1024, 144, 32), (4096, 9, 16), (8192, 144, 32),
          (32768, 9, 16))
STEPS = 300


def time_per_step(grad, rows: int, k: int, n: int) -> tuple[float, float, float, float]:
    """(median, fastest, slowest us a step, CPU seconds per wall second) of `grad` in a
    lax.scan that feeds each result back, so that XLA can neither hoist nor drop it."""
    key = jax.random.PRNGKey(0)
    x, dy = jax.random.normal(key, (rows, k)), jax.random.normal(key, (rows, n))

    def step(carry, _):
        x, dy = carry
        g = grad(x, dy)[0, 0]
        return (x + 1e-7 * g, dy - 1e-7 * g), None

    run = jax.jit(lambda c: jax.lax.scan(step, c, None, length=STEPS))
    jax.block_until_ready(run((x, dy)))
    walls, cpus = [], []
    for _ in range(5):
        cpu, wall = time.process_time(), time.perf_counter()
        jax.block_until_ready(run((x, dy)))
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    us = [w / STEPS * 1e6 for w in walls]
    return statistics.median(us), min(us), max(us), sum(cpus) / sum(walls)


def _cell(t) -> str:
    return f"{t[0]:7.1f} us ({t[1]:.0f}-{t[2]:.0f}, cpu {t[3]:.1f})"


def main() -> None:
    print(f"{'rows x K, N':>18}  {'copy + YNNPACK':>28}  {'Eigen':>28}")
    for rows, k, n in SHAPES:
        cells = (_cell(time_per_step(grad, rows, k, n)) for grad in (weight_grad_ynnpack, weight_grad_eigen))
        print(f"{rows:>6} x {k:>3}, {n:>3}  " + "  ".join(f"{c:>28}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
