"""torchvision's resnet18 from its public definition (pytorch/vision
torchvision/models/resnet.py: conv3x3, conv1x1, BasicBlock, ResNet._make_layer with its
`downsample` nn.Sequential(conv1x1, BatchNorm2d), nn.ReLU(inplace=True) used twice per
block, the stem conv 7x7 stride 2 + MaxPool2d(3, 2, padding 1), layer1..layer4 of two
blocks each, AdaptiveAvgPool2d((1, 1)), fc; resnet18 = ResNet(BasicBlock, [2, 2, 2, 2])).
`import torchvision` does not load beside the pinned CPU torch, so the classes are
written out here with torchvision's attribute names (its groups/dilation/norm_layer
options and Bottleneck left out: resnet18 uses none of them).

The Flax NNX port is written as Flax users write it: nnx.Sequential for layer1..4 and
for `downsample`, NHWC inside, jaxport.nn's conv2d, TorchBatchNorm, max_pool2d (torch's
-inf padding and its routing of tied maxima's gradient) and torch_linear. No name_map,
no conversion hook."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx
from torch import nn

import jaxport.nn as jnn
from parity_tests.tests import zoo_resnet


# ---- torch: torchvision's definition -----------------------------------------------------
def conv3x3(in_planes, out_planes, stride=1):
    """3x3 convolution with padding"""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes, out_planes, stride=1):
    """1x1 convolution"""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.avgpool(x)
        x = x.reshape(x.size(0), -1)
        x = self.fc(x)
        return x


def resnet18(**kwargs):
    return ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)


# ---- NNX: the port --------------------------------------------------------------------------
class NnxBasicBlock(nnx.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, *, rngs, eps1=1e-5, residual_relu=True):
        self.conv1 = jnn.conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False, rngs=rngs)
        self.bn1 = jnn.TorchBatchNorm(planes, eps=eps1, rngs=rngs, dtype=jnp.float32)
        self.conv2 = jnn.conv2d(planes, planes, 3, padding=1, bias=False, rngs=rngs)
        self.bn2 = jnn.TorchBatchNorm(planes, rngs=rngs, dtype=jnp.float32)
        self.downsample = downsample
        self.residual_relu = residual_relu

    def __call__(self, x):                                   # (N, H, W, C)
        identity = x
        out = nnx.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out = out + identity
        return nnx.relu(out) if self.residual_relu else out


class NnxResNet(nnx.Module):
    """ResNet(BasicBlock, layers) in Flax NNX. bugs: "maxpool unpadded" (the stem's pool
    without torch's padding 1), "eps" (layer1.0's bn1 with eps 1e-3), "no residual relu"
    (the ReLU after layer2.1's add dropped)."""

    def __init__(self, layers=(2, 2, 2, 2), num_classes=1000, *, rngs: nnx.Rngs, bugs=()):
        self.bugs, self.inplanes = tuple(bugs), 64
        self.conv1 = jnn.conv2d(3, 64, 7, stride=2, padding=3, bias=False, rngs=rngs)
        self.bn1 = jnn.TorchBatchNorm(64, rngs=rngs, dtype=jnp.float32)
        self.layer1 = self._make_layer(64, layers[0], 1, rngs, "layer1")
        self.layer2 = self._make_layer(128, layers[1], 2, rngs, "layer2")
        self.layer3 = self._make_layer(256, layers[2], 2, rngs, "layer3")
        self.layer4 = self._make_layer(512, layers[3], 2, rngs, "layer4")
        self.fc = jnn.torch_linear(512, num_classes, rngs=rngs, dtype=jnp.float32)

    def _make_layer(self, planes, blocks, stride, rngs, name):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nnx.Sequential(jnn.conv2d(self.inplanes, planes, 1, stride=stride, bias=False, rngs=rngs),
                                        jnn.TorchBatchNorm(planes, rngs=rngs, dtype=jnp.float32))
        out = []
        for k in range(blocks):
            path = f"{name}.{k}"
            out.append(NnxBasicBlock(self.inplanes, planes, stride if k == 0 else 1, downsample if k == 0 else None,
                                     rngs=rngs, eps1=1e-3 if "eps" in self.bugs and path == "layer1.0" else 1e-5,
                                     residual_relu=not ("no residual relu" in self.bugs and path == "layer2.1")))
            self.inplanes = planes
        return nnx.Sequential(*out)

    def __call__(self, x):                                   # (N, H, W, 3)
        x = nnx.relu(self.bn1(self.conv1(x)))
        x = jnn.max_pool2d(x, 3, 2, 0 if "maxpool unpadded" in self.bugs else 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = x.mean(axis=(1, 2))                              # AdaptiveAvgPool2d((1, 1)) and the flatten
        return self.fc(x)


def nnx_resnet18(num_classes=3, bugs=(), seed=0) -> NnxResNet:
    return NnxResNet((2, 2, 2, 2), num_classes, rngs=nnx.Rngs(seed), bugs=bugs)


def digits32(n: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n of the UCI 8x8 digits (zoo_resnet.digits), each pixel repeated 4x4 to 32x32 and
    the gray copied to 3 channels: (N, 3, 32, 32) in [0, 1], labels 0-2 (class mod 3).
    Repeated pixels make constant regions, so the stem's max pool sees ties."""
    x, y = zoo_resnet.digits(n, seed)
    x = np.kron(x, np.ones((1, 1, 4, 4)))
    return np.repeat(x, 3, axis=1), y


# as torchvision's references/classification/train.py: SGD with momentum 0.9, cross entropy
TRAIN = dict(loss="cross_entropy", optimizer="sgd", lr=0.1, momentum=0.9, input_layout="nhwc")
