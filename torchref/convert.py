"""A model's parameters to and from the exchange format (PyTorch names, numpy).

The exchange format always uses the class model's names; the Sequential form's
numbered names ("0.weight") are translated here, so files from either form load
into both. Twin: jaxport/convert.py.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from portcore import digits, specs
from portcore.weights import check_params
from torchref import kinds_convert


def _exchange_name(example: str, torch_name: str, form: str) -> str:
    if form == "class":
        return torch_name
    index, kind = torch_name.split(".")
    layer = {str(i): n for n, i in specs.SEQUENTIAL_INDEX.items()}[index]
    return f"{layer}.{kind}"


def named_parameters(model: nn.Module, example: str, form: str) -> dict[str, nn.Parameter]:
    """The model's Parameter objects under their exchange names."""
    return {_exchange_name(example, n, form): p for n, p in model.named_parameters()}


def to_numpy(model: nn.Module, example: str, form: str = "class") -> dict[str, np.ndarray]:
    if example in digits.LAYERS:                 # parameters and buffers (state_dict)
        return kinds_convert.to_numpy(model)
    return {n: p.detach().cpu().numpy().copy()
            for n, p in named_parameters(model, example, form).items()}


def load_numpy(model: nn.Module, params: dict, example: str, form: str = "class") -> nn.Module:
    """Copy `params` into the model in place (cast to the model's dtype and device)."""
    if example in digits.LAYERS:
        return kinds_convert.load_numpy(model, params)
    check_params(params, specs.param_shapes(example))
    with torch.no_grad():
        for name, p in named_parameters(model, example, form).items():
            p.copy_(torch.as_tensor(np.asarray(params[name]), dtype=p.dtype))
    return model
