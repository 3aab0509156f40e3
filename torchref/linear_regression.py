"""Linear regression: y = 5 + 5x + 5·U[0,1) fitted by Linear(1, 1), MSE, SGD lr 0.2.

Twin: jaxport/linear_regression.py.
"""
import torch
from torch import nn

from portcore import registry
from torchref.numerics import torch_dtype
from torchref.data import ArrayDataset

FORMS = registry.forms("linear_regression")


class SimpleData(ArrayDataset):
    """The tutorial's Dataset over x = linspace(-1, 1, 100) and its noisy line."""


class LinearRegression(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(1, 1)

    def forward(self, x):          # (N, 1) -> (N, 1)
        return self.linear(x)


Dataset = SimpleData
loss_fn = nn.MSELoss()


def build_model(form="class", *, seed=0, dtype="float32") -> nn.Module:
    """The model with nn.Linear's default init drawn under torch.manual_seed(seed)."""
    registry.check_form("linear_regression", form)
    torch.manual_seed(seed)
    model = LinearRegression()
    return model.to(torch_dtype(dtype))


def frame(model, x) -> torch.Tensor:
    """The animation draws the fitted line at the data's x."""
    return model(x)[:, 0]          # (N,)
