"""Models that take several inputs and return several outputs, on both sides.

- Inputs: `x` may be a tuple of arrays (passed positionally: `model(ids, mask)`) or a
  dict (passed as keywords: `model(input_ids=..., attention_mask=...)`), every array
  with the rows on axis 0. `Inputs` keeps that structure while the harness batches,
  moves and converts it, and is a JAX pytree, so it crosses `jax.jit`.
- Outputs: a tuple, list, dict (transformers' ModelOutput is one), NamedTuple or
  dataclass. `output=` names the leaf the harness compares and a named loss takes (an
  index or a key or attribute name); without it a named loss needs one array, and a
  caller's own loss pair takes the whole output. What is compared is `view`: the
  selected leaf, or every leaf flattened per row and set side by side.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import torch

from parity_tests.engine.sides.port_objectives import PortInputError


@jax.tree_util.register_pytree_node_class
class Inputs:
    """Several input arrays: a tuple (positional) or a dict (keywords), rows on axis 0."""

    def __init__(self, parts):
        self.parts = parts

    def values(self) -> list:
        return list(self.parts.values()) if isinstance(self.parts, dict) else list(self.parts)

    def map(self, fn) -> "Inputs":
        return Inputs.tree_unflatten(self.tree_flatten()[1], [fn(v) for v in self.values()])

    def __len__(self) -> int:
        return len(self.values()[0])

    def __getitem__(self, index) -> "Inputs":
        return self.map(lambda v: v[index])

    @property
    def shape(self):                   # for messages: each part's shape
        return self.map(lambda v: tuple(np.shape(v))).parts

    def tree_flatten(self):
        keys = tuple(self.parts) if isinstance(self.parts, dict) else None
        return tuple(self.values()), keys

    @classmethod
    def tree_unflatten(cls, keys, children):
        return cls(dict(zip(keys, children)) if keys is not None else tuple(children))


def as_inputs(x):
    """The caller's x: one array, or Inputs of a tuple/list/dict of arrays with equal rows."""
    if isinstance(x, (tuple, list, dict)):
        parts = Inputs({k: np.asarray(v) for k, v in x.items()} if isinstance(x, dict) else tuple(map(np.asarray, x)))
        if not parts.values() or any(v.ndim == 0 or len(v) != len(parts.values()[0]) for v in parts.values()):
            raise PortInputError(f"x's arrays need the same number of rows on axis 0 (shapes {parts.shape})")
        return parts
    return np.asarray(x)


def map_leaves(fn, x):
    """fn on one array, or on each array of Inputs."""
    return x.map(fn) if isinstance(x, Inputs) else fn(x)


def call(model, x):
    """model(x), model(*x) for a tuple, model(**x) for a dict."""
    if isinstance(x, Inputs):
        return model(**x.parts) if isinstance(x.parts, dict) else model(*x.parts)
    return model(x)


def select(out, output):
    """The `output` leaf of a model's output (None: all of it)."""
    if output is None:
        return out
    try:
        if isinstance(out, dict) or (isinstance(out, (tuple, list)) and isinstance(output, int)):
            return out[output]
        return getattr(out, output)
    except (KeyError, IndexError, AttributeError, TypeError):
        raise PortInputError(f"output={output!r}: the model's output ({type(out).__name__}) has no such leaf") from None


def leaves(out) -> list:
    """The arrays of an output, in order (dicts in their own order)."""
    if isinstance(out, (torch.Tensor, np.ndarray, jax.Array)):
        return [out]
    if isinstance(out, (dict, tuple, list)):
        return [leaf for v in (out.values() if isinstance(out, dict) else out) for leaf in leaves(v)]
    if dataclasses.is_dataclass(out):
        return [leaf for f in dataclasses.fields(out) for leaf in leaves(getattr(out, f.name))]
    return [out] if out is not None else []


def view(out, output=None):
    """What is compared: the selected leaf, or every leaf flattened per row, side by side."""
    parts = leaves(select(out, output))
    if len(parts) == 1:
        return parts[0]
    n = parts[0].shape[0] if parts and parts[0].ndim else None
    if n is None or any(p.ndim == 0 or p.shape[0] != n for p in parts):
        raise PortInputError(f"the model returns {len(parts)} arrays (shapes {[tuple(p.shape) for p in parts]}) "
                             "without the rows on axis 0 in each: pass output= to pick the one to compare")
    flat = [p.reshape(n, -1) for p in parts]
    return torch.cat(flat, 1) if isinstance(parts[0], torch.Tensor) else jnp.concatenate(flat, 1)
