"""A small MLP fitting sin(x) + 0.5·U[0,1): 1 -> 200 -> 100 -> 1 with ReLU, MSE, Adam lr 0.01.

Built as a class (`NeuralNetworks`) and as an `nn.Sequential`; both carry the same
parameters. Twin: jaxport/neural_network.py.
"""
import torch
from torch import nn

from portcore import registry
from torchref.numerics import torch_dtype
from torchref.data import ArrayDataset

FORMS = registry.forms("neural_network")


class ComplexeData(ArrayDataset):
    """The tutorial's Dataset over x = linspace(-10, 10, 100) and noisy sin(x)."""


class NeuralNetworks(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden_1 = nn.Linear(1, 200)
        self.hidden_2 = nn.Linear(200, 100)
        self.output = nn.Linear(100, 1)

    def forward(self, x):                      # (N, 1)
        x = torch.relu(self.hidden_1(x))       # (N, 200)
        x = torch.relu(self.hidden_2(x))       # (N, 100)
        return self.output(x)                  # (N, 1)


def sequential() -> nn.Sequential:
    """The same network as nn.Sequential; children 0, 2, 4 are hidden_1, hidden_2, output."""
    return nn.Sequential(nn.Linear(1, 200), nn.ReLU(), nn.Linear(200, 100), nn.ReLU(),
                         nn.Linear(100, 1))


Dataset = ComplexeData
loss_fn = nn.MSELoss()


def build_model(form="class", *, seed=0, dtype="float32") -> nn.Module:
    """The model with nn.Linear's default init drawn under torch.manual_seed(seed)."""
    registry.check_form("neural_network", form)
    torch.manual_seed(seed)
    model = NeuralNetworks() if form == "class" else sequential()
    return model.to(torch_dtype(dtype))


def frame(model, x) -> torch.Tensor:
    """The animation draws the fitted curve at the data's x."""
    return model(x)[:, 0]                      # (N,)
