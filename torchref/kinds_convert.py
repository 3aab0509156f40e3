"""A torch model's state_dict <-> the exchange format, for models with buffers
(BatchNorm's running statistics, the shared dropout's step). Twin: jaxport/kinds_convert.py.

The exchange format is the state_dict less BatchNorm's num_batches_tracked: torch reads
that counter only when momentum=None (a cumulative average); with momentum 0.1 no
computation depends on it, and Flax has no slot for it. Integer buffers (the dropout
step) travel as the model's float dtype.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from portcore.weights import check_params

SKIPPED = ("num_batches_tracked",)


def exchanged(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict entries that cross the API, as the model's own tensors."""
    return {n: t for n, t in model.state_dict(keep_vars=True).items() if n.rsplit(".", 1)[-1] not in SKIPPED}


def float_dtype(model: nn.Module) -> torch.dtype:
    return next(p.dtype for p in model.parameters())


def to_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    dtype = float_dtype(model)
    return {n: (t.detach() if t.is_floating_point() else t.detach().to(dtype)).cpu().numpy().copy()
            for n, t in exchanged(model).items()}


def load_numpy(model: nn.Module, params: dict) -> nn.Module:
    """Copy `params` into the model in place, each entry cast to its tensor's dtype."""
    targets = exchanged(model)
    check_params(params, {n: tuple(t.shape) for n, t in targets.items()})
    with torch.no_grad():
        for name, t in targets.items():
            t.copy_(torch.as_tensor(np.asarray(params[name])).to(t.dtype))
    return model
