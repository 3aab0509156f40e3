"""jaxport's max_pool_2x2 (the cnn's pooling without lax.reduce_window) against
nnx.max_pool and torch's max_pool2d: the same maxima, and a gradient that goes where
torch's goes when a window holds equal maxima."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxport.deep_layers import max_pool_2x2


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_max_pool_2x2_is_nnx_max_pool_and_routes_ties_like_torch(dtype):
    rng = np.random.default_rng(0)
    with jax.enable_x64(dtype == "float64"):
        for _ in range(20):
            x = rng.integers(0, 3, size=(3, 8, 6, 5)).astype(dtype)   # values 0-2: most windows tie
            g = rng.standard_normal((3, 4, 3, 5)).astype(dtype)
            pooled, vjp = jax.vjp(max_pool_2x2, jnp.asarray(x))
            expected, lax_vjp = jax.vjp(lambda v: nnx.max_pool(v, (2, 2), strides=(2, 2)), jnp.asarray(x))
            t = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)     # NCHW
            torch.nn.functional.max_pool2d(t, 2).backward(torch.tensor(g.transpose(0, 3, 1, 2)))
            grad = np.asarray(vjp(jnp.asarray(g))[0])
            assert pooled.dtype == x.dtype and np.array_equal(pooled, expected)
            assert np.array_equal(grad, t.grad.numpy().transpose(0, 2, 3, 1))
            assert np.array_equal(grad, lax_vjp(jnp.asarray(g))[0])
