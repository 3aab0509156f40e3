"""Torch-semantics Flax NNX layers: the module to use when you port a torch model to
Flax NNX and want torch's numerics, not Flax's defaults.

Each layer mirrors one torch class and says in its docstring what differs from the
stock Flax layer (init, eps, layout, gate biases, tie routing). The layer kinds
(portcore/kinds.py and beside it; `portcore.convert.of_torch`) convert a torch
layer's state_dict onto these modules' attribute paths, so a port built from them
needs no conversion hook in check_port (docs/check-your-own-port.md, "Torch-semantics
layers: jaxport.nn").

Inputs are channels last (NHWC, (N, L, C)) for convolutions, pooling and GroupNorm;
the recurrent and attention modules take torch's own layouts (sequence first unless
batch_first=True).

- torch_linear                 nn.Linear             U(+-1/sqrt(in)) kernel and bias
- conv1d, conv2d, torch_conv   nn.Conv1d, nn.Conv2d  torch's init, numeric padding, groups, dilation
- conv_transpose2d             nn.ConvTranspose2d    the flipped kernel, padding d*(k-1)-p
- max_pool2d, max_pool_2x2     F.max_pool2d          -inf padding, ties' gradient to the first maximum
- TorchBatchNorm               nn.BatchNorm2d        torch's momentum, unbiased running variance, summation order
- LayerNorm, GroupNorm         nn.LayerNorm, nn.GroupNorm   eps 1e-5, two-pass variance, bias=False
- Embedding                    nn.Embedding          N(0, 1) init, padding_idx's zero gradient
- gelu                         F.gelu                exact erf (jax.nn.gelu defaults to tanh)
- leaky_relu                   F.leaky_relu          the slope as gradient at 0 (jax.nn's: 1)
- TorchLSTMCell, TorchGRUCell  nn.LSTM/GRU's cells   torch's two biases (b_hn inside the reset product)
- LSTM, GRU                    nn.LSTM, nn.GRU       layers, directions, torch's (output, h_n) layouts
- MultiheadAttention           nn.MultiheadAttention packed in-projection, torch's masks and weights
- SharedDropout                torchref's SharedDropout   the same mask on both sides
"""
from jaxport.deep_layers import (SharedDropout, TorchBatchNorm, TorchGRUCell, TorchLSTMCell, max_pool_2x2,
                                 torch_conv)
from jaxport.layers import torch_linear
from jaxport.nn.attention import MultiheadAttention
from jaxport.nn.convs import conv1d, conv2d, conv_transpose2d
from jaxport.nn.norms import Embedding, GroupNorm, LayerNorm, gelu, leaky_relu
from jaxport.nn.pooling import max_pool2d
from jaxport.nn.recurrent import GRU, LSTM

__all__ = ["GRU", "LSTM", "Embedding", "GroupNorm", "LayerNorm", "MultiheadAttention", "SharedDropout",
           "TorchBatchNorm", "TorchGRUCell", "TorchLSTMCell", "conv1d", "conv2d", "conv_transpose2d", "gelu",
           "leaky_relu", "max_pool2d", "max_pool_2x2", "torch_conv", "torch_linear"]
