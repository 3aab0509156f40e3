"""Arrays between the exchange format (numpy under torch names) and jaxport's pytrees:
the device placement, the optimizer state, and a fast leaf-by-leaf layout for the
stepper that crosses the API at every step."""
from __future__ import annotations

import jax
import numpy as np
import optax
from jax.tree_util import DictKey, GetAttrKey

from jaxport import convert
from jaxport.numerics import jax_device, jax_dtype
from portcore import convert as layer_convert, registry

# Optax's state fields and torch's names for the same moments.
MOMENTS = {"mu": "exp_avg", "nu": "exp_avg_sq", "trace": "momentum_buffer"}


def host_dtype(dtype: str):
    """The numpy dtype of a run's arrays; "int" (class labels) is int32, JAX's default int."""
    return np.int32 if dtype == "int" else jax_dtype(dtype)


def device_array(array, dtype, device) -> jax.Array:
    """`array` on the device, in its own buffer. On CPU, device_put may adopt an aligned
    numpy buffer without copying, so a caller editing its array afterwards would edit
    ours: copy first (the copy is private, so sharing it is harmless)."""
    return jax.device_put(np.array(array, dtype=host_dtype(dtype), copy=True), jax_device(device))


def labels(example, y, dtype, device) -> jax.Array:
    """y on the device: in the run's dtype, or int32 class indices (registry `labels`)."""
    return device_array(y, registry.get(example).label_dtype(dtype), device)


def opt_state_to_numpy(opt_state, example, form="class") -> dict:
    out = {}
    for field, torch_key in MOMENTS.items():
        moment = optax.tree_utils.tree_get(opt_state, field)
        if moment is not None:
            out.update({f"{torch_key}/{n}": v for n, v in convert.to_numpy(moment, example, form).items()})
    count = optax.tree_utils.tree_get(opt_state, "count")
    if count is not None:
        out["step"] = np.asarray(float(count))
    return out


def opt_state_from_numpy(template, state: dict, example, form="class", dtype=None):
    """`template` (from tx.init) with the moments and step count of `state` put in."""
    changes = {}
    for field, torch_key in MOMENTS.items():
        moment = {k.split("/", 1)[1]: v for k, v in state.items() if k.startswith(torch_key + "/")}
        if moment:
            changes[field] = convert.to_state(moment, optax.tree_utils.tree_get(template, field), example, form, dtype)
    if "step" in state:
        changes["count"] = jax.numpy.asarray(int(state["step"]), dtype=jax.numpy.int32)
    return optax.tree_utils.tree_set(template, **changes) if changes else template


class Layout:
    """Where each exchange-format entry lives among a pytree's leaves (a model state, or
    an optimizer state with its moments and count), through the one converter. Faster
    than to_state/opt_state_from_numpy, which rebuild NNX State objects: the stepper
    crosses the API at every step. Entries an optimizer lacks read as zeros."""

    def __init__(self, template, example, form):
        leaves, self.treedef = jax.tree_util.tree_flatten_with_path(template)
        self.layers, self.paths = registry.get(example).layers, convert.flax_paths(example, form)
        self.slots = []                                    # (field, NNX path, dtype, shape)
        for path, leaf in leaves:
            field, keys = "", []
            for k in path:
                if isinstance(k, GetAttrKey) and k.name in MOMENTS:
                    field = MOMENTS[k.name]
                elif isinstance(k, GetAttrKey) and k.name == "count":
                    field = "step"
                elif isinstance(k, DictKey):
                    keys.append(k.key)
            self.slots.append((field, tuple(keys), leaf.dtype, leaf.shape))

    def tree(self, arrays: dict):
        flax = {}
        for field in {slot[0] for slot in self.slots} - {"step"}:
            named = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(field + "/")} \
                if field else {k: v for k, v in arrays.items() if "/" not in k and k != "step"}
            flax[field] = layer_convert.to_flax(self.layers, named, self.paths)
        leaves = []
        for field, path, dtype, shape in self.slots:
            value = arrays.get("step") if field == "step" else flax[field].get(path)
            leaves.append(np.zeros(shape, dtype) if value is None else np.asarray(value, dtype))
        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    def arrays(self, tree) -> dict:
        out, flat = {}, {}
        for (field, path, _, _), leaf in zip(self.slots, jax.tree_util.tree_leaves(tree)):
            if field == "step":
                out["step"] = np.asarray(float(leaf))
            else:
                flat.setdefault(field, {})[path] = np.asarray(leaf)
        for field, leaves in flat.items():
            prefix = f"{field}/" if field else ""
            out.update({prefix + n: v for n, v in layer_convert.from_flax(self.layers, leaves, self.paths).items()})
        return out
