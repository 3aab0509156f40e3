"""A model's parameters (and buffers) to and from the exchange format (PyTorch names, numpy).

The exchange format always uses the class model's names; the Sequential form's
numbered names ("0.weight") are translated here through the example's registry
record, so files from either form load into both. Buffers that cross the API
(registry: state_shapes; BatchNorm's running statistics, the shared dropout's step)
travel with the parameters: the exchange format is the state_dict less BatchNorm's
num_batches_tracked, which torch reads only when momentum=None (a cumulative average)
and Flax has no slot for. Integer buffers travel as the model's float dtype.
Twin: jaxport/convert.py.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from portcore import registry
from portcore.weights import check_params


def _exchange_name(example: str, torch_name: str, form: str) -> str:
    index = {str(i): layer for layer, i in registry.get(example).forms[form].items()}
    layer, _, leaf = torch_name.rpartition(".")
    return f"{index.get(layer, layer)}.{leaf}"


def named_parameters(model: nn.Module, example: str, form: str) -> dict[str, nn.Parameter]:
    """The model's Parameter objects under their exchange names."""
    return {_exchange_name(example, n, form): p for n, p in model.named_parameters()}


def named_state(model: nn.Module, example: str, form: str) -> dict[str, torch.Tensor]:
    """Parameters and the buffers that cross the API, under their exchange names."""
    kept = registry.get(example).exchange_shapes()
    buffers = {_exchange_name(example, n, form): b for n, b in model.named_buffers()}
    return {**named_parameters(model, example, form), **{n: b for n, b in buffers.items() if n in kept}}


def to_numpy(model: nn.Module, example: str, form: str = "class") -> dict[str, np.ndarray]:
    dtype = next(model.parameters()).dtype
    return {n: (t.detach() if t.is_floating_point() else t.detach().to(dtype)).cpu().numpy().copy()
            for n, t in named_state(model, example, form).items()}


def load_numpy(model: nn.Module, params: dict, example: str, form: str = "class") -> nn.Module:
    """Copy `params` into the model in place (cast to each tensor's dtype and device)."""
    check_params(params, registry.get(example).exchange_shapes())
    with torch.no_grad():
        for name, t in named_state(model, example, form).items():
            t.copy_(torch.as_tensor(np.asarray(params[name])).to(t.dtype))
    return model
