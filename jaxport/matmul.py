"""x @ w whose weight gradient x^T dy runs in the faster of XLA:CPU's two dot libraries.

Why: the weight gradient of x @ w is x^T dy, a dot that contracts both operands over
their rows (the batch). XLA:CPU sends a dot to YNNPACK only when its left operand is
contracted over its last dimension, so this one runs in Eigen, and folds any transpose
written before it back into the dot's dimensions. Materialising x^T behind an
optimization barrier keeps the transpose a copy, and the dot becomes a plain (K, rows) x
(rows, N) product in YNNPACK: on this 2-core CPU a (100, 200)^T (100, 100) weight
gradient took 52 us in Eigen and 31 us as the copy plus YNNPACK's dot, inside a compiled
loop. Over many rows Eigen wins instead: it splits the long contraction over XLA's
threads, and x needs no transposed copy (for the cnn's conv2, 1024 rows, the copy of its
(1024, 144) patches alone is ~590 KB). The cnn's default run, both convolutions' weight
gradients in Eigen: 0.314-0.316 s -> 0.297-0.302 s (AMD EPYC, 2 cores, one process per
variant, alternating, median of 5 each, 5 rounds; docs/speed.md). So Eigen from 1024
rows on, unless the output is narrow (a 10-class head's (K, 10), where Eigen took 87 us
against 68). At 512 rows neither won everywhere: the gru's gradients over its 8 x 64
rows made its default run faster in Eigen (0.455 -> 0.423 s), the lstm's per-step ones
at batch 512 made its large run slower (0.685 -> 0.79 s), so those stay in YNNPACK.
`python -m examples.bench_weight_grad` times both libraries on the examples' shapes; the
dots a library splits over threads there vary by up to 2x from run to run, and the loops
of whole runs decided. Only float32: YNNPACK has no float64 dot, where the copy would
only cost. The sum is the same; its order is the library's.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


# From here on Eigen's weight gradient beats the copy plus YNNPACK's (see above).
EIGEN_MIN_ROWS = 1024
EIGEN_MIN_COLUMNS = 16


def _rows(a):
    return a.reshape(-1, a.shape[-1])


def weight_grad(x, dy):
    """x^T dy over every row of x (..., K) and dy (..., N): (K, N)."""
    x, dy = _rows(x), _rows(dy)
    if x.dtype == jnp.float32 and (x.shape[0] < EIGEN_MIN_ROWS or dy.shape[1] < EIGEN_MIN_COLUMNS):
        return weight_grad_ynnpack(x, dy)
    return weight_grad_eigen(x, dy)


def weight_grad_ynnpack(x, dy):
    """x (rows, K), dy (rows, N): x^T copied behind a barrier, then YNNPACK's plain dot."""
    return jax.lax.optimization_barrier(x.T) @ dy


def weight_grad_eigen(x, dy):
    """x (rows, K), dy (rows, N): one dot over the rows, which XLA:CPU runs in Eigen."""
    return x.T @ dy


@jax.custom_vjp
def matmul(x, w):
    """x (..., K) @ w (K, N), the forward pass as jax.lax.dot_general computes it."""
    return jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))


def _matmul_fwd(x, w):
    return matmul(x, w), (x, w)


def _matmul_bwd(res, dy):
    x, w = res
    dx = jax.lax.dot_general(dy, w, (((dy.ndim - 1,), (1,)), ((), ())))     # dy w^T, as autodiff
    return dx, weight_grad(x, dy)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kwargs):
    """nnx.Linear's dot_general: `matmul` for its own case (the last axis of the input
    against the kernel's first, no batch axes), lax.dot_general otherwise."""
    (lc, rc), batch = dimension_numbers
    if (tuple(lc) == (lhs.ndim - 1,) and tuple(rc) == (0,) and tuple(map(tuple, batch)) == ((), ()) and rhs.ndim == 2
            and precision is None and preferred_element_type is None and kwargs.get("out_sharding") is None):
        return matmul(lhs, rhs)
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type, **kwargs)
