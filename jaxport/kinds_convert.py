"""NNX state <-> the exchange format through the layer kinds (portcore/convert.py), for
models whose state holds more than parameters: BatchNorm's running statistics and the
shared dropout's step counter cross with the weights. Twin: torchref/kinds_convert.py.

The exchange format is all floating point (portcore.weights checks it): an integer
leaf (the dropout counter, uint32 in the model) leaves as the model's float dtype and
comes back as its own integer dtype; a count below 2**24 is exact in either float.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from portcore import convert
from portcore.weights import check_params


def _flat(tree: dict, prefix=()) -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, prefix + (key,)))
        else:
            out[prefix + (key,)] = value
    return out


def _set(tree: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


def float_dtype(state) -> np.dtype:
    """The model's float dtype: that of its first floating leaf."""
    return next(np.dtype(leaf.dtype) for leaf in jax.tree.leaves(state)
                if jnp.issubdtype(leaf.dtype, jnp.floating))


def to_numpy(state: nnx.State, layers) -> dict[str, np.ndarray]:
    """A state (the model's, its gradients' or an optimizer moment's) as {torch name:
    array in torch's layout}: every entry the state has, so gradients give the
    parameters only."""
    flat = {k: np.asarray(v) for k, v in _flat(nnx.to_pure_dict(state)).items()}
    out = convert.from_flax(layers, flat)
    dtype = float_dtype(state)
    return {n: (v if np.issubdtype(v.dtype, np.floating) else v.astype(dtype)).copy()
            for n, v in out.items()}


def to_state(params: dict, template: nnx.State, layers, expected: dict | None = None) -> nnx.State:
    """A new State shaped like `template`, holding `params` (torch names and layout),
    each leaf in the template's dtype. expected: the names and shapes to check (every
    name the template needs by default); WeightsError names every misfit."""
    if expected is None:
        expected = {n: s for n, s in {**convert.param_shapes(layers), **convert.state_shapes(layers)}.items()}
        have = set(to_numpy(template, layers))
        expected = {n: s for n, s in expected.items() if n in have}
    check_params(params, expected)
    state = jax.tree.map(lambda leaf: leaf, template)
    pure = nnx.to_pure_dict(state)
    flat = _flat(pure)
    for path, value in convert.to_flax(layers, params).items():
        _set(pure, path, jnp.asarray(np.asarray(value), dtype=flat[path].dtype))
    nnx.replace_by_pure_dict(state, pure)
    return state


def load_numpy(model: nnx.Module, params: dict, layers) -> nnx.Module:
    """Copy `params` (parameters and state) into the model in place, in its dtypes."""
    nnx.update(model, to_state(params, nnx.state(model), layers))
    return model
