"""Logistic regression on Iris setosa/versicolor: Linear(2, 1) + sigmoid, BCE, SGD lr 0.2.

Twin: torchref/logistic_regression.py.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from portcore import registry
from jaxport.layers import torch_linear
from jaxport.losses import bce
from jaxport.numerics import jax_dtype

FORMS = registry.forms("logistic_regression")


class LogisticRegression(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs, dtype):
        self.linear = torch_linear(2, 1, rngs=rngs, dtype=dtype)

    def __call__(self, x):         # (N, 2) -> (N, 1) probabilities
        return jax.nn.sigmoid(self.linear(x))


# torch's BCELoss semantics (probabilities in, logs clamped at -100); the optax way,
# logits in, is jaxport.losses.bce_with_logits.
loss_fn = bce


def build_model(form="class", *, seed=0, dtype="float32") -> nnx.Module:
    """The model with torch's init distribution, drawn from JAX's PRNG key `seed`."""
    registry.check_form("logistic_regression", form)
    return LogisticRegression(rngs=nnx.Rngs(seed), dtype=jax_dtype(dtype))


def frame(model, x):
    """The animation draws the boundary w0·x0 + w1·x1 + b = 0: keep (w0, w1, b)."""
    return jnp.concatenate([model.linear.kernel[:, 0], model.linear.bias])   # (3,)
