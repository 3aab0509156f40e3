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


def test_the_gradient_goes_to_a_maximum_when_xla_fuses_the_producer_twice():
    """jit and eager agree on pooling a fused producer (BatchNorm summed in two stages,
    then ReLU): XLA computed it once for the max and again for `entry == max`, an ulp
    apart, so no entry equalled the max and the gradient went to the window's last
    entry (the cnn's gradients at init 3-7% off). The maximum and its entry now come
    from the same comparisons."""
    from jaxport.batch_norm import batch_norm_train
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.uniform(size=(100, 4, 4, 16)))
        kernel = jnp.asarray(rng.normal(size=(3, 3, 16, 32)) / 12)
        scale, bias = jnp.ones(32), jnp.zeros(32)

        def loss(x, scale, bias):
            h = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
            y = batch_norm_train(h, scale, bias, None, 1e-5)[0]
            return jnp.sum(jnp.sin(max_pool_2x2(nnx.relu(y))))
        eager = jax.grad(loss, (0, 2))(x, scale, bias)
        fused = jax.jit(jax.grad(loss, (0, 2)))(x, scale, bias)
        assert np.allclose(eager[1], fused[1], rtol=1e-12, atol=1e-12), np.abs(eager[1] - fused[1]).max()
        assert np.allclose(eager[0], fused[0], rtol=1e-10, atol=1e-12), np.abs(eager[0] - fused[0]).max()
