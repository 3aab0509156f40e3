"""Arrays between the exchange format (numpy under torch names) and torch: tensors on
the run's device and dtype, and the optimizer state. Twin: jaxport/state.py.

Optimizer state in the exchange format: "step" and "exp_avg/<param>",
"exp_avg_sq/<param>" for Adam; "momentum_buffer/<param>" for SGD with momentum.
"""
from __future__ import annotations

import numpy as np
import torch

from torchref.numerics import torch_device, torch_dtype


def tensor(array, dtype, device) -> torch.Tensor:
    """A tensor in the run's dtype, or int64 class indices for dtype "int" (what
    nn.CrossEntropyLoss takes)."""
    kind = torch.int64 if dtype == "int" else torch_dtype(dtype)
    return torch.as_tensor(np.asarray(array), dtype=kind, device=torch_device(device))


def opt_state_to_numpy(optimizer, named: dict) -> dict:
    out = {}
    for name, p in named.items():
        for key, value in optimizer.state.get(p, {}).items():
            if key == "step":
                out["step"] = np.asarray(float(value))
            elif value is not None:
                out[f"{key}/{name}"] = value.detach().cpu().numpy().copy()
    return out


def opt_state_from_numpy(optimizer, named: dict, state: dict) -> None:
    """Put `state` into the optimizer, in place."""
    for name, p in named.items():
        entry = {}
        for key in ("exp_avg", "exp_avg_sq", "momentum_buffer"):
            if f"{key}/{name}" in state:
                # A copy: the optimizer updates its moments in place, and the
                # caller's arrays must stay as they were.
                entry[key] = torch.tensor(state[f"{key}/{name}"], dtype=p.dtype, device=p.device)
        if "step" in state:
            entry["step"] = torch.tensor(float(state["step"]), dtype=torch.float32)
        if entry:
            optimizer.state[p] = entry
