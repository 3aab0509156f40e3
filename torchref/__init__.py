"""The PyTorch reference: the tutorial's examples in plain PyTorch, eager mode.

Twin of `jaxport`: each `torchref/<example>.py` has a `jaxport/<example>.py` with the
same public names. Imports numpy and torch, never jax, flax or optax.
"""
import importlib


def example_module(name: str):
    """The module `torchref.<name>`, e.g. example_module("neural_network")."""
    return importlib.import_module(f"{__name__}.{name}")
