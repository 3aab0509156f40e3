"""NNX state to and from the exchange format (PyTorch names and layout, numpy).

torch's Linear keeps weight (out, in) and computes x @ W.T; Flax's keeps kernel
(in, out) and computes x @ K. So weight <-> kernel is a transpose, and names map
"hidden_1.weight" <-> ("hidden_1", "kernel"), or ("layers", 0, "kernel") for the
nnx.Sequential form. Twin: torchref/convert.py.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from portcore import digits, specs
from portcore.weights import check_params
from jaxport import kinds_convert


def nnx_path(name: str, form: str) -> tuple:
    """'hidden_1.weight' -> ('hidden_1', 'kernel') (class) or ('layers', 0, 'kernel')."""
    layer, kind = name.split(".")
    head = (layer,) if form == "class" else ("layers", specs.SEQUENTIAL_INDEX[layer])
    return head + ({"weight": "kernel", "bias": "bias"}[kind],)


def _get(tree: dict, path: tuple):
    for key in path:
        tree = tree[key]
    return tree


def _set(tree: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


def to_numpy(state: nnx.State, example: str, form: str = "class") -> dict[str, np.ndarray]:
    """A model's (or an optimizer moment's) state as {torch name: array in torch layout}."""
    if example in digits.LAYERS:                 # described by layer kinds
        return kinds_convert.to_numpy(state, digits.LAYERS[example])
    pure = nnx.to_pure_dict(state)
    out = {}
    for name in specs.param_shapes(example):
        value = np.asarray(_get(pure, nnx_path(name, form)))
        out[name] = value.T.copy() if name.endswith(".weight") else value.copy()
    return out


def to_state(params: dict, template: nnx.State, example: str, form: str = "class", dtype=None) -> nnx.State:
    """A new State shaped like `template`, holding `params` (torch names and layout).

    Raises WeightsError naming every missing, extra or mis-shaped parameter.
    """
    if example in digits.LAYERS:                 # each leaf in the template's dtype
        return kinds_convert.to_state(params, template, digits.LAYERS[example])
    check_params(params, specs.param_shapes(example))
    state = jax.tree.map(lambda leaf: leaf, template)   # a fresh State; the template stays
    pure = nnx.to_pure_dict(state)
    for name, value in params.items():
        value = np.asarray(value)
        value = value.T if name.endswith(".weight") else value
        _set(pure, nnx_path(name, form), jnp.asarray(value, dtype=dtype or value.dtype))
    nnx.replace_by_pure_dict(state, pure)
    return state


def load_numpy(model: nnx.Module, params: dict, example: str, form: str = "class") -> nnx.Module:
    """Copy `params` into the model in place, in the model's dtype."""
    if example in digits.LAYERS:
        return kinds_convert.load_numpy(model, params, digits.LAYERS[example])
    state = nnx.state(model, nnx.Param)
    dtype = jax.tree.leaves(state)[0].dtype
    nnx.update(model, to_state(params, state, example, form, dtype))
    return model
