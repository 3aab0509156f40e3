"""x @ w whose weight gradient XLA:CPU hands to YNNPACK instead of Eigen.

Why: the weight gradient of x @ w is x^T dy, a dot that contracts both operands over
their rows (the batch). XLA:CPU sends a dot to YNNPACK only when its left operand is
contracted over its last dimension, so this one runs in Eigen, and folds any
transpose written before it back into the dot's dimensions. Materialising x^T behind
an optimization barrier keeps the transpose a copy, and the dot becomes a plain
(K, rows) x (rows, N) product: on this 2-core CPU a (100, 200)^T (100, 100) weight
gradient took 52 us in Eigen and 31 us as the copy plus YNNPACK's dot, inside a
compiled loop. Only float32: YNNPACK has no float64 dot, where the copy would only
cost. The sum is the same; its order is the library's.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _rows(a):
    return a.reshape(-1, a.shape[-1])


def weight_grad(x, dy):
    """x^T dy over every row of x (..., K) and dy (..., N): (K, N)."""
    x, dy = _rows(x), _rows(dy)
    if x.dtype == jnp.float32:
        return jax.lax.optimization_barrier(x.T) @ dy
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
