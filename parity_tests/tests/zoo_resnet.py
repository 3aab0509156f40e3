"""A BasicBlock ResNet as torchvision writes it (models/resnet.py: a stem of conv, bn,
in-place ReLU; `layer1` an nn.Sequential of BasicBlocks whose ReLU is one in-place
nn.ReLU used twice, after bn1 and after the residual add), scaled down to 8x8 one-
channel images, and its Flax NNX port written as Flax users write it: nnx.Sequential
for the containers (children under `layers`), NHWC inside, no name_map."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx
from torch import nn

from jaxport.deep_layers import TorchBatchNorm

WIDTH = 4


class BasicBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class TorchResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, WIDTH, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(WIDTH)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(WIDTH), BasicBlock(WIDTH))
        self.fc = nn.Linear(WIDTH, 3)

    def forward(self, x):                      # (N, 1, 8, 8)
        x = self.layer1(self.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def _conv(c_in, c_out, rngs, dtype):
    return nnx.Conv(c_in, c_out, (3, 3), padding=1, use_bias=False, dtype=dtype, param_dtype=dtype, rngs=rngs)


class NnxBasicBlock(nnx.Module):
    def __init__(self, c: int, *, rngs, dtype=jnp.float32, eps1: float = 1e-5, residual_relu: bool = True):
        self.conv1, self.bn1 = _conv(c, c, rngs, dtype), TorchBatchNorm(c, eps=eps1, rngs=rngs, dtype=dtype)
        self.conv2, self.bn2 = _conv(c, c, rngs, dtype), TorchBatchNorm(c, rngs=rngs, dtype=dtype)
        self.residual_relu = residual_relu

    def __call__(self, x):                     # (N, H, W, C)
        out = nnx.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + x
        return nnx.relu(out) if self.residual_relu else out


class NnxResNet(nnx.Module):
    """bugs: {"eps": eps of layer1.0's bn1, "no_residual_relu": the ReLU after layer1.1's add dropped}."""

    def __init__(self, bugs=(), seed: int = 0):
        rngs, dtype = nnx.Rngs(seed), jnp.float32
        self.conv1, self.bn1 = _conv(1, WIDTH, rngs, dtype), TorchBatchNorm(WIDTH, rngs=rngs, dtype=dtype)
        self.layer1 = nnx.Sequential(
            NnxBasicBlock(WIDTH, rngs=rngs, eps1=1e-3 if "eps" in bugs else 1e-5),
            NnxBasicBlock(WIDTH, rngs=rngs, residual_relu="no_residual_relu" not in bugs))
        self.fc = nnx.Linear(WIDTH, 3, rngs=rngs)

    def __call__(self, x):                     # (N, 8, 8, 1)
        x = self.layer1(nnx.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean(axis=(1, 2)))


def digits(n: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n of the UCI digits as (N, 1, 8, 8) in [0, 1] and labels 0-2 (their class mod 3)."""
    from portcore import digits as d
    x, y = d.load_digits()
    rows = np.random.default_rng(seed).choice(len(x), n, replace=False)
    return x[rows].reshape(n, 1, 8, 8), (y[rows] % 3).astype(np.int64)
