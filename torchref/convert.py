"""A model's parameters to and from the exchange format (PyTorch names, numpy).

The exchange format always uses the class model's names; the Sequential form's
numbered names ("0.weight") are translated here through the example's registry
record, so files from either form load into both. Twin: jaxport/convert.py.
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


def to_numpy(model: nn.Module, example: str, form: str = "class") -> dict[str, np.ndarray]:
    return {n: p.detach().cpu().numpy().copy()
            for n, p in named_parameters(model, example, form).items()}


def load_numpy(model: nn.Module, params: dict, example: str, form: str = "class") -> nn.Module:
    """Copy `params` into the model in place (cast to the model's dtype and device)."""
    check_params(params, registry.param_shapes(example))
    with torch.no_grad():
        for name, p in named_parameters(model, example, form).items():
            p.copy_(torch.as_tensor(np.asarray(params[name]), dtype=p.dtype))
    return model
