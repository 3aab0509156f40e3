"""A small CNN on the 8x8 digits: conv1 Conv2d(1,16,3,p1), ReLU, MaxPool 2; conv2
Conv2d(16,32,3,p1), bn BatchNorm2d, ReLU, MaxPool 2; flatten; drop Dropout(0.25);
fc Linear(128,10). Cross-entropy, SGD lr 0.05 momentum 0.9.

Flax convolves NHWC, so the model flattens its (N, 2, 2, 32) map as H, W, C where
torch flattens C, H, W: the layer kinds permute fc's input columns on conversion
(portcore/kinds.py, Linear.input_chw), and the dropout is told each unit's torch index.
Twin: torchref/cnn.py.
"""
import jax.numpy as jnp
import numpy as np
from flax import nnx

from portcore import registry
from jaxport.deep_layers import SharedDropout, TorchBatchNorm, max_pool_2x2, torch_conv
from jaxport.layers import torch_linear
from jaxport.losses import cross_entropy
from jaxport.numerics import jax_dtype

FORMS = registry.forms("cnn")
# Unit (h, w, c) of the NHWC-flattened map is unit c*4 + h*2 + w of torch's.
TORCH_UNITS = np.arange(128).reshape(32, 2, 2).transpose(1, 2, 0).ravel()


class ConvNet(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs, dtype):
        self.conv1 = torch_conv(1, 16, 3, 1, rngs=rngs, dtype=dtype)
        self.conv2 = torch_conv(16, 32, 3, 1, rngs=rngs, dtype=dtype)
        self.bn = TorchBatchNorm(32, rngs=rngs, dtype=dtype)
        self.drop = SharedDropout(0.25, unit_order=TORCH_UNITS)
        self.fc = torch_linear(128, 10, rngs=rngs, dtype=dtype)

    def __call__(self, x, *, mask=None):               # (N, 1, 8, 8): the shared data is NCHW
        x = jnp.transpose(x, (0, 2, 3, 1))             # (N, 8, 8, 1) NHWC, Flax's layout
        # max_pool_2x2 is nnx.max_pool(x, (2, 2), strides=(2, 2)), faster in XLA:CPU's loop
        x = max_pool_2x2(nnx.relu(self.conv1(x)))      # (N, 4, 4, 16)
        # mask: rows that count in BatchNorm's batch statistics (the compiled loop pads
        # the last batch with rows torch never sees)
        x = max_pool_2x2(nnx.relu(self.bn(self.conv2(x), mask=mask)))  # (N, 2, 2, 32)
        x = x.reshape(x.shape[0], -1)                  # (N, 128), H, W, C order
        return self.fc(self.drop(x))                   # (N, 10) logits


loss_fn = cross_entropy


def build_model(form="class", *, seed=0, dtype="float32") -> nnx.Module:
    """torch's init distributions drawn from JAX's PRNG key `seed`."""
    registry.check_form("cnn", form)
    return ConvNet(rngs=nnx.Rngs(seed), dtype=jax_dtype(dtype))


def frame(model, x):
    """The animation's state at an epoch: the eval-mode logits of the images `x`.
    nnx.view is model.eval() on a view: the model itself stays in training mode."""
    return nnx.view(model, deterministic=True, use_running_average=True, raise_if_not_found=False)(x)


def apply(model, x, weight=None):
    """The training-mode forward of a batch: rows of weight 0 are the compiled loop's
    padding of a partial batch and must not count in BatchNorm's batch statistics."""
    return model(x, mask=None if weight is None else weight.reshape(-1) > 0)
