"""A small MLP fitting sin(x) + 0.5·U[0,1): 1 -> 200 -> 100 -> 1 with ReLU, MSE, Adam lr 0.01.

Built as a class (`NeuralNetworks`) and as an `nnx.Sequential`; both carry the same
parameters. Twin: torchref/neural_network.py.
"""
from flax import nnx

from portcore import registry
from jaxport.layers import torch_linear
from jaxport.losses import mse
from jaxport.numerics import jax_dtype

FORMS = registry.forms("neural_network")


class NeuralNetworks(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs, dtype):
        self.hidden_1 = torch_linear(1, 200, rngs=rngs, dtype=dtype)
        self.hidden_2 = torch_linear(200, 100, rngs=rngs, dtype=dtype)
        self.output = torch_linear(100, 1, rngs=rngs, dtype=dtype)

    def __call__(self, x):                     # (N, 1)
        x = nnx.relu(self.hidden_1(x))         # (N, 200)
        x = nnx.relu(self.hidden_2(x))         # (N, 100)
        return self.output(x)                  # (N, 1)


def sequential(*, rngs: nnx.Rngs, dtype) -> nnx.Sequential:
    """The same network as nnx.Sequential; layers 0, 2, 4 are hidden_1, hidden_2, output."""
    return nnx.Sequential(torch_linear(1, 200, rngs=rngs, dtype=dtype), nnx.relu,
                          torch_linear(200, 100, rngs=rngs, dtype=dtype), nnx.relu,
                          torch_linear(100, 1, rngs=rngs, dtype=dtype))


loss_fn = mse


def build_model(form="class", *, seed=0, dtype="float32") -> nnx.Module:
    """The model with torch's init distribution, drawn from JAX's PRNG key `seed`."""
    registry.check_form("neural_network", form)
    build = NeuralNetworks if form == "class" else sequential
    return build(rngs=nnx.Rngs(seed), dtype=jax_dtype(dtype))


def frame(model, x):
    """The animation draws the fitted curve at the data's x."""
    return model(x)[:, 0]                      # (N,)
