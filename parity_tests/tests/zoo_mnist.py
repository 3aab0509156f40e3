"""The PyTorch examples' MNIST network, ported to Flax NNX for the port harness (issue 21,
"a zoo of public models").

Source: pytorch/examples, `mnist/main.py` (class `Net`, trained with `F.nll_loss`,
`optim.Adadelta(lr=1.0)` and `StepLR(step_size=1, gamma=0.7)`). The torch class below is
written from that definition; the NNX class is our port of it: NHWC input
(check_port's `input_layout="nhwc"`), and fc1's weight columns permuted from torch's
(C, H, W) flatten order to NHWC's (H, W, C) by the converter's
`Linear(9216, 128, input_chw=(64, 12, 12))` (`FC1_CONVERT`).

Data: MNIST is not in the repository; `mnist_like_data` makes 28x28 images from the
repository's 8x8 digits, each pixel repeated 3x3 (24x24) and padded by 2 with the
background 0, as MNIST centres its digits in a 28x28 frame. The constant background gives
max pooling ties, where torch and XLA may route a gradient to different positions.

Planted porting bugs (the NNX side's keywords): `log_softmax_axis=0` (over the batch),
`flatten_chw=False` with no `FC1_CONVERT` (fc1 takes NHWC features in torch's column order).
"""
from __future__ import annotations

import jax
import numpy as np
import torch
import torch.nn.functional as F
from flax import nnx
from torch import nn

from portcore import registry
from portcore.kinds import Linear

FC1_CONVERT = {"fc1": Linear(9216, 128, input_chw=(64, 12, 12))}
TRAIN = dict(loss="nll_loss", optimizer="adadelta", lr=1.0, schedule=dict(kind="step", step_size=1, gamma=0.7),
             input_layout="nhwc")


class Net(nn.Module):
    """pytorch/examples mnist/main.py's Net, as defined there."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        return F.log_softmax(self.fc2(x), dim=1)


def torch_net(seed: int = 0) -> Net:
    """Net with torch's default init from a fixed seed: the same weights on every call."""
    torch.manual_seed(seed)
    return Net()


class NnxNet(nnx.Module):
    """The port: NHWC (N, 28, 28, 1) in, log-probabilities (N, 10) out."""

    def __init__(self, log_softmax_axis: int = -1, seed: int = 0):
        rngs = nnx.Rngs(seed)
        self.conv1 = nnx.Conv(1, 32, (3, 3), strides=1, padding="VALID", rngs=rngs)
        self.conv2 = nnx.Conv(32, 64, (3, 3), strides=1, padding="VALID", rngs=rngs)
        self.dropout1 = nnx.Dropout(0.25, rngs=rngs)
        self.dropout2 = nnx.Dropout(0.5, rngs=rngs)
        self.fc1 = nnx.Linear(9216, 128, rngs=rngs)
        self.fc2 = nnx.Linear(128, 10, rngs=rngs)
        self.log_softmax_axis = log_softmax_axis

    def __call__(self, x):
        x = jax.nn.relu(self.conv1(x))
        x = jax.nn.relu(self.conv2(x))                       # (N, 24, 24, 64)
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))          # (N, 12, 12, 64)
        x = self.dropout1(x)
        x = x.reshape(x.shape[0], -1)                        # H, W, C order: FC1_CONVERT
        x = jax.nn.relu(self.fc1(x))
        x = self.dropout2(x)
        return jax.nn.log_softmax(self.fc2(x), axis=self.log_softmax_axis)


def mnist_like_data(n: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 1, 28, 28) images in [0, 1] from the 8x8 digits (3x3 blocks, a 2-pixel border
    of 0) and their labels (n,) int64."""
    x, y = registry.make_data("cnn", seed)[:2]
    x, y = np.asarray(x[:n], dtype=np.float64), np.asarray(y[:n], dtype=np.int64)
    big = np.repeat(np.repeat(x, 3, axis=2), 3, axis=3)      # (n, 1, 24, 24)
    return np.pad(big, ((0, 0), (0, 0), (2, 2), (2, 2))), y
