"""nnx.Linear with torch's default initialisation.

torch's nn.Linear draws weight ~ kaiming_uniform(a=sqrt(5)), which works out to
U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and bias from the same interval. Flax's default
is lecun_normal weights and a zero bias; we override both so that a model built
without initial weights starts from the same distribution as torch's.
"""
import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxport import matmul


def uniform_symmetric(bound: float):
    """An initializer drawing U(-bound, bound) with JAX's PRNG."""
    def init(key, shape, dtype):
        return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)
    return init


def torch_linear(in_features: int, out_features: int, *, rngs: nnx.Rngs, dtype=jnp.float32) -> nnx.Linear:
    """nnx.Linear(in, out) initialised like torch.nn.Linear(in, out).

    Its kernel is (in, out), the transpose of torch's weight (out, in). Its dot is
    jaxport/matmul.py's, whose weight gradient runs faster on XLA:CPU.
    """
    bound = 1.0 / math.sqrt(in_features)
    return nnx.Linear(in_features, out_features, dtype=dtype, param_dtype=dtype,
                      kernel_init=uniform_symmetric(bound), bias_init=uniform_symmetric(bound),
                      dot_general=matmul.dot_general, rngs=rngs)
