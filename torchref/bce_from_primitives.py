"""Binary cross-entropy two ways: nn.BCELoss on sigmoid(logits), and the formula
written from torch.log and torch.sigmoid. Both give 1.8834 on the tutorial's inputs.

Twin: jaxport/bce_from_primitives.py.
"""
import torch
from torch import nn

from portcore import specs
from torchref.numerics import torch_device, torch_dtype


def run(dtype="float32", device="cpu") -> dict:
    """{'library': nn.BCELoss value, 'primitives': the hand-written formula}."""
    kw = dict(dtype=torch_dtype(dtype), device=torch_device(device))
    logits = torch.tensor(specs.BCE_LOGITS, **kw)
    y = torch.tensor(specs.BCE_LABELS, **kw)
    p = torch.sigmoid(logits)
    library = nn.BCELoss()(p, y)
    primitives = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
    return {"library": library.item(), "primitives": primitives.item()}
