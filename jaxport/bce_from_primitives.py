"""Binary cross-entropy three ways: the optax logits loss (which does not reduce, so
we take the mean), jaxport's torch-semantics BCE on probabilities, and the formula
written from jnp.log and jax.nn.sigmoid. All give 1.8834 on the tutorial's inputs.

Twin: torchref/bce_from_primitives.py.
"""
import jax
import jax.numpy as jnp
import optax

from portcore import specs
from jaxport.losses import bce
from jaxport.numerics import dtype_scope, jax_device, jax_dtype


def run(dtype="float32", device="cpu") -> dict:
    """{'library': optax value, 'primitives': the formula, 'torch_semantics': losses.bce}."""
    with dtype_scope(dtype), jax.default_device(jax_device(device)):
        logits = jnp.asarray(specs.BCE_LOGITS, dtype=jax_dtype(dtype))
        y = jnp.asarray(specs.BCE_LABELS, dtype=jax_dtype(dtype))
        p = jax.nn.sigmoid(logits)
        library = optax.sigmoid_binary_cross_entropy(logits, y).mean()
        primitives = -(y * jnp.log(p) + (1 - y) * jnp.log(1 - p)).mean()
        return {"library": float(library), "primitives": float(primitives),
                "torch_semantics": float(bce(p, y))}
