"""Linear regression: y = 5 + 5x + 5·U[0,1) fitted by Linear(1, 1), MSE, SGD lr 0.2.

Twin: torchref/linear_regression.py.
"""
from flax import nnx

from portcore import registry
from jaxport.layers import torch_linear
from jaxport.losses import mse
from jaxport.numerics import jax_dtype

FORMS = registry.forms("linear_regression")


class LinearRegression(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs, dtype):
        self.linear = torch_linear(1, 1, rngs=rngs, dtype=dtype)

    def __call__(self, x):         # (N, 1) -> (N, 1)
        return self.linear(x)


loss_fn = mse


def build_model(form="class", *, seed=0, dtype="float32") -> nnx.Module:
    """The model with torch's init distribution, drawn from JAX's PRNG key `seed`."""
    registry.check_form("linear_regression", form)
    return LinearRegression(rngs=nnx.Rngs(seed), dtype=jax_dtype(dtype))


def frame(model, x):
    """The animation draws the fitted line at the data's x."""
    return model(x)[:, 0]          # (N,)
