"""The tutorial's examples in JAX + Flax NNX + Optax, each whole training run compiled
into one XLA program.

Twin of `torchref`: each `jaxport/<example>.py` has a `torchref/<example>.py` with the
same public names. Imports numpy and jax/flax/optax, never torch.
"""
import importlib


def example_module(name: str):
    """The module `jaxport.<name>`, e.g. example_module("neural_network")."""
    return importlib.import_module(f"{__name__}.{name}")
