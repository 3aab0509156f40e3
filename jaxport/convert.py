"""NNX state to and from the exchange format (PyTorch names and layout, numpy), through
the example's layer kinds and the one converter (portcore/convert.py): a Linear's
weight (out, in) is the kernel (in, out) transposed, a conv's OIHW weight the HWIO
kernel, and so on. The nnx.Sequential form keeps its layers under ("layers", i).
Twin: torchref/convert.py.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.traverse_util import flatten_dict

from portcore import convert, registry
from portcore.weights import check_params


def flax_paths(example: str, form: str) -> dict:
    """Where each layer lives in the form's NNX state, when not under its own name."""
    return {layer: ("layers", i) for layer, i in registry.get(example).forms[form].items()}


def to_numpy(state: nnx.State, example: str, form: str = "class") -> dict[str, np.ndarray]:
    """A model's (or an optimizer moment's) state as {torch name: array in torch layout}."""
    flat = {path: np.asarray(v) for path, v in flatten_dict(nnx.to_pure_dict(state)).items()}
    out = convert.from_flax(registry.get(example).layers, flat, flax_paths(example, form))
    return {name: np.array(value) for name, value in out.items()}      # owned, writable copies


def to_state(params: dict, template: nnx.State, example: str, form: str = "class", dtype=None) -> nnx.State:
    """A new State shaped like `template`, holding `params` (torch names and layout).

    Raises WeightsError naming every missing, extra or mis-shaped parameter.
    """
    record = registry.get(example)
    check_params(params, record.param_shapes())
    state = jax.tree.map(lambda leaf: leaf, template)   # a fresh State; the template stays
    pure = nnx.to_pure_dict(state)
    for path, value in convert.to_flax(record.layers, params, flax_paths(example, form)).items():
        node = pure
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = jnp.asarray(value, dtype=dtype or value.dtype)
    nnx.replace_by_pure_dict(state, pure)
    return state


def load_numpy(model: nnx.Module, params: dict, example: str, form: str = "class") -> nnx.Module:
    """Copy `params` into the model in place, in the model's dtype."""
    state = nnx.state(model, nnx.Param)
    dtype = jax.tree.leaves(state)[0].dtype
    nnx.update(model, to_state(params, state, example, form, dtype))
    return model
