"""A small CNN on the 8x8 digits: conv1 Conv2d(1,16,3,p1), ReLU, MaxPool 2; conv2
Conv2d(16,32,3,p1), bn BatchNorm2d, ReLU, MaxPool 2; flatten; drop Dropout(0.25);
fc Linear(128,10). Cross-entropy, SGD lr 0.05 momentum 0.9.

Twin: jaxport/cnn.py.
"""
import torch
from torch import nn

from portcore import registry
from torchref.data import ArrayDataset
from torchref.numerics import torch_dtype
from torchref.shared_dropout import SharedDropout

FORMS = registry.forms("cnn")


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn = nn.BatchNorm2d(32)
        # nn.Dropout(0.25) with a mask jaxport can reproduce (torchref/shared_dropout.py)
        self.drop = SharedDropout(0.25)
        self.fc = nn.Linear(128, 10)

    def forward(self, x):                              # (N, 1, 8, 8)
        x = self.pool(torch.relu(self.conv1(x)))       # (N, 16, 4, 4)
        x = self.pool(torch.relu(self.bn(self.conv2(x))))   # (N, 32, 2, 2)
        x = torch.flatten(x, 1)                        # (N, 128), C, H, W order
        return self.fc(self.drop(x))                   # (N, 10) logits


class DigitsData(ArrayDataset):
    """The 8x8 digits and their labels, int64 class indices (registry: labels "int")."""


Dataset = DigitsData
loss_fn = nn.CrossEntropyLoss()


def build_model(form="class", *, seed=0, dtype="float32") -> nn.Module:
    """torch's default init (Conv2d, Linear: kaiming_uniform(a=sqrt(5)); BatchNorm: 1, 0)
    drawn under torch.manual_seed(seed)."""
    registry.check_form("cnn", form)
    torch.manual_seed(seed)
    return ConvNet().to(torch_dtype(dtype))


def frame(model, x) -> torch.Tensor:
    """The animation's state at an epoch: the eval-mode logits of the images `x`."""
    was_training = model.training
    model.eval()
    try:
        return model(x)                                # (N, 10)
    finally:
        model.train(was_training)
