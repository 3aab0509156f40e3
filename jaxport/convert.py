"""NNX state to and from the exchange format (PyTorch names and layout, numpy), through
the example's layer kinds and the one converter (portcore/convert.py): a Linear's
weight (out, in) is the kernel (in, out) transposed, a conv's OIHW weight the HWIO
kernel, and so on. The nnx.Sequential form keeps its layers under ("layers", i).

A model's state may hold more than parameters: BatchNorm's running statistics and the
shared dropout's step counter cross with the weights (registry: state_shapes). The
exchange format is all floating point (portcore.weights checks it), so an integer leaf
(the dropout step, uint32 in the model) leaves as the state's float dtype and comes
back in its own integer dtype; counts below 2**24 are exact in either float.
Twin: torchref/convert.py.
"""
from __future__ import annotations

import functools

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


def _float_dtype(leaves) -> np.dtype:
    return next((np.dtype(v.dtype) for v in leaves if np.issubdtype(v.dtype, np.floating)), np.dtype(np.float64))


def to_numpy(state: nnx.State, example: str, form: str = "class") -> dict[str, np.ndarray]:
    """A model's (or its gradients', or an optimizer moment's) state as {torch name: array
    in torch layout}: the entries the state holds, buffers included where it has them."""
    flat = {path: np.asarray(v) for path, v in flatten_dict(nnx.to_pure_dict(state)).items()}
    out = convert.from_flax(registry.get(example).layers, flat, flax_paths(example, form))
    dtype = _float_dtype(flat.values())
    return {name: np.array(value, dtype=value.dtype if np.issubdtype(value.dtype, np.floating) else dtype)
            for name, value in out.items()}                       # owned, writable copies


@functools.lru_cache(maxsize=None)
def _buffer_paths(example: str, form: str) -> frozenset:
    """The NNX paths of the buffers that cross the API (empty for most examples)."""
    layers, paths = registry.get(example).layers, flax_paths(example, form)
    init = convert.torch_init(layers, np.random.default_rng(0))
    params = {n: v for n, v in init.items() if n in convert.param_shapes(layers)}
    return frozenset(convert.to_flax(layers, init, paths).keys() - convert.to_flax(layers, params, paths).keys())


def to_state(params: dict, template: nnx.State, example: str, form: str = "class", dtype=None) -> nnx.State:
    """A new State shaped like `template`, holding `params` (torch names and layout): the
    parameters, and the buffers too where the template has them (a model's state, not an
    optimizer moment's). Integer leaves keep the template's dtype.

    Raises WeightsError naming every missing, extra or mis-shaped parameter.
    """
    record, paths = registry.get(example), flax_paths(example, form)
    flat = flatten_dict(nnx.to_pure_dict(template))
    check_params(params, record.exchange_shapes() if _buffer_paths(example, form) & flat.keys()
                 else record.param_shapes())
    state = jax.tree.map(lambda leaf: leaf, template)   # a fresh State; the template stays
    pure = nnx.to_pure_dict(state)
    for path, value in convert.to_flax(record.layers, params, paths).items():
        node = pure
        for key in path[:-1]:
            node = node[key]
        integer = not jnp.issubdtype(flat[path].dtype, jnp.floating)
        node[path[-1]] = jnp.asarray(value, dtype=flat[path].dtype if integer else (dtype or value.dtype))
    nnx.replace_by_pure_dict(state, pure)
    return state


def load_numpy(model: nnx.Module, params: dict, example: str, form: str = "class") -> nnx.Module:
    """Copy `params` (and the buffers, where the model has them) into the model in place,
    in the model's dtype."""
    state = nnx.state(model)
    dtype = _float_dtype(jax.tree.leaves(state))
    nnx.update(model, to_state(params, state, example, form, dtype))
    return model
