"""An LSTM reading each 8x8 digit as a sequence of 8 rows of 8 pixels: rnn LSTM(8, 64,
batch_first), the last step's hidden state, fc Linear(64, 10). Cross-entropy, Adam lr 0.01.

Twin: jaxport/lstm.py.
"""
import torch
from torch import nn

from portcore import digits, registry
from torchref.data import ArrayDataset
from torchref.numerics import torch_dtype

FORMS = registry.forms("lstm")
HIDDEN = 64


class RecurrentNet(nn.Module):
    def __init__(self, rnn_type):
        super().__init__()
        self.rnn = rnn_type(digits.SIDE, HIDDEN, batch_first=True)
        self.fc = nn.Linear(HIDDEN, digits.N_CLASSES)

    def forward(self, x):                              # (N, 8, 8): 8 steps of 8 pixels
        out, _ = self.rnn(x)                           # (N, 8, 64), every step's h
        return self.fc(out[:, -1])                     # (N, 10) logits of the last step


class DigitsData(ArrayDataset):
    """The 8x8 digits and their labels, int64 class indices (registry: labels "int")."""


Dataset = DigitsData
loss_fn = nn.CrossEntropyLoss()


def build_model(form="class", *, seed=0, dtype="float32") -> nn.Module:
    """torch's default init (every LSTM entry U(+-1/sqrt(64))) under manual_seed(seed)."""
    registry.check_form("lstm", form)
    torch.manual_seed(seed)
    return RecurrentNet(nn.LSTM).to(torch_dtype(dtype))


def frame(model, x) -> torch.Tensor:
    """The animation's state at an epoch: the logits of the images `x`."""
    return model(x)                                    # (N, 10)
