"""A GRU reading each 8x8 digit as 8 rows of 8 pixels: rnn GRU(8, 64, batch_first), the
last step's hidden state, fc Linear(64, 10). Cross-entropy, Adam lr 0.01.

Twin: jaxport/gru.py.
"""
import torch
from torch import nn

from portcore import registry
from torchref.lstm import Dataset, RecurrentNet, frame, loss_fn  # noqa: F401  (the same network)
from torchref.numerics import torch_dtype

FORMS = registry.forms("gru")


def build_model(form="class", *, seed=0, dtype="float32") -> nn.Module:
    """torch's default init (every GRU entry U(+-1/sqrt(64))) under manual_seed(seed)."""
    registry.check_form("gru", form)
    torch.manual_seed(seed)
    return RecurrentNet(nn.GRU).to(torch_dtype(dtype))
