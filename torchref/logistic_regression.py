"""Logistic regression on Iris setosa/versicolor: Linear(2, 1) + sigmoid, BCE, SGD lr 0.2.

Twin: jaxport/logistic_regression.py.
"""
import torch
from torch import nn

from portcore import registry
from torchref.numerics import torch_dtype
from torchref.data import ArrayDataset

FORMS = registry.forms("logistic_regression")


class IrisData(ArrayDataset):
    """The tutorial's Dataset over Iris rows 1-100 (sepal length, width; 0/1 labels)."""


class LogisticRegression(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, x):          # (N, 2) -> (N, 1) probabilities
        return torch.sigmoid(self.linear(x))


Dataset = IrisData
# BCELoss takes probabilities and clamps each log term at -100 (never -inf).
loss_fn = nn.BCELoss()


def build_model(form="class", *, seed=0, dtype="float32") -> nn.Module:
    """The model with nn.Linear's default init drawn under torch.manual_seed(seed)."""
    registry.check_form("logistic_regression", form)
    torch.manual_seed(seed)
    model = LogisticRegression()
    return model.to(torch_dtype(dtype))


def frame(model, x) -> torch.Tensor:
    """The animation draws the boundary w0·x0 + w1·x1 + b = 0: keep (w0, w1, b)."""
    return torch.cat([model.linear.weight[0], model.linear.bias])   # (3,)
