"""jaxport/matmul.py: the weight gradient x^T dy, in YNNPACK (a transposed copy of x
behind an optimization barrier) or in Eigen (over many rows), is x^T dy within float32's
rounding bound, and jax.grad of `matmul` gives it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxport import matmul

EPS32 = float(np.finfo(np.float32).eps) / 2          # unit roundoff


@pytest.mark.parametrize("rows, k, n, library", [
    (100, 200, 100, "ynnpack"),        # the network's hidden_2
    (1024, 144, 32, "eigen"),          # the cnn's conv2
    (4096, 9, 16, "eigen"),            # the cnn's conv1
    (2048, 128, 10, "ynnpack"),        # many rows, a narrow head
])
def test_weight_grad_is_x_transpose_dy_in_the_chosen_library(rows, k, n, library):
    rng = np.random.default_rng(rows + k + n)
    x = rng.standard_normal((rows, k)).astype(np.float32)
    dy = rng.standard_normal((rows, n)).astype(np.float32)
    hlo = jax.jit(matmul.weight_grad).lower(x, dy).as_text()
    assert ("optimization_barrier" in hlo) == (library == "ynnpack")
    got = np.asarray(jax.jit(matmul.weight_grad)(x, dy), np.float64)
    exact = x.astype(np.float64).T @ dy.astype(np.float64)
    # the worst case of any summation order: |error| <= rows * u * (|x|^T |dy|), rounded
    # products included (Higham, Accuracy and Stability, (3.5)); typical errors are ~sqrt(rows) u
    bound = rows * EPS32 * (np.abs(x).astype(np.float64).T @ np.abs(dy).astype(np.float64))
    assert np.all(np.abs(got - exact) <= bound)
    # and a wrong gradient (one row left out) falls outside it
    wrong = x[1:].astype(np.float64).T @ dy[1:].astype(np.float64)
    assert np.any(np.abs(wrong - exact) > bound)
    # jax.grad of x @ w through `matmul` hands its weight gradient to weight_grad (x an
    # argument: as a constant XLA could lay out x^T and change the dot)
    w = rng.standard_normal((k, n)).astype(np.float32)
    grad_w = jax.jit(jax.grad(lambda w, x, dy: jnp.sum(matmul.matmul(x, w) * dy)))(w, x, dy)
    assert np.array_equal(np.asarray(grad_w), np.asarray(jax.jit(matmul.weight_grad)(x, dy)))
