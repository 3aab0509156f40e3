"""The layer kinds public models need beyond the examples' (ConvTranspose1d/2d,
GroupNorm, Embedding with padding_idx, LSTM and GRU with several layers and both
directions, MultiheadAttention and its out_proj), read off torch's layers by
convert.of_torch: torch's names and shapes, a bit-exact round trip, torch's initial
distribution, torch's FLOP count, and one clear line for what no kind covers. That
each rule computes what torch computes is test_nn_layers*.py's (forward and gradients
through jaxport.nn)."""
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from portcore import convert
from portcore.recurrent_kinds import LSTM

LAYERS = {
    "conv_transpose2d": lambda: nn.ConvTranspose2d(16, 4, (3, 2), stride=2, padding=1, output_padding=1),
    "conv_transpose1d": lambda: nn.ConvTranspose1d(6, 8, 5, stride=3, dilation=2, bias=False),
    "group_norm": lambda: nn.GroupNorm(4, 32),
    "embedding padding_idx": lambda: nn.Embedding(300, 16, padding_idx=7),
    "lstm 2 layers bidirectional": lambda: nn.LSTM(12, 32, num_layers=2, bidirectional=True),
    "gru 3 layers": lambda: nn.GRU(12, 32, num_layers=3, batch_first=True),
    "gru bidirectional": lambda: nn.GRU(12, 32, bidirectional=True),
    "multihead attention": lambda: nn.MultiheadAttention(64, 4),
    "multihead attention without bias": lambda: nn.MultiheadAttention(64, 4, bias=False),
}


def _own(module):
    return {n: p.detach().numpy() for n, p in module.named_parameters(recurse=False)}


def _modules(name):
    torch.manual_seed(0)
    top = LAYERS[name]()
    return [(path, m) for path, m in top.named_modules() if _own(m)]


@pytest.mark.parametrize("name", LAYERS)
def test_names_and_shapes_are_torchs(name):
    for _, module in _modules(name):
        kind = convert.of_torch(module)
        assert list(kind.param_shapes().items()) == [(n, tuple(v.shape)) for n, v in _own(module).items()]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", LAYERS)
def test_round_trip_is_bit_exact(name, dtype):
    """(An LSTM kind for a stock nnx.LSTMCell sums torch's two biases: exact for
    jaxport.nn's cells, flax_input_bias=True, which check_port reads off the NNX state.)"""
    rng = np.random.default_rng(0)
    for _, module in _modules(name):
        kind = convert.of_torch(module)
        kind = dataclasses.replace(kind, flax_input_bias=True) if isinstance(kind, LSTM) else kind
        arrays = {n: rng.standard_normal(s).astype(dtype) for n, s in kind.param_shapes().items()}
        back = kind.from_flax(kind.to_flax(arrays))
        assert back.keys() == arrays.keys()
        assert all(back[n].dtype == dtype and back[n].tobytes() == arrays[n].tobytes() for n in arrays)


def _ks_distance(a, b):
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the samples' CDFs."""
    a, b = np.sort(np.ravel(a)), np.sort(np.ravel(b))
    grid = np.concatenate([a, b])
    return np.max(np.abs(np.searchsorted(a, grid, "right") / a.size - np.searchsorted(b, grid, "right") / b.size))


@pytest.mark.parametrize("name", LAYERS)
def test_torch_init_draws_torchs_distribution(name):
    """Constant tensors (zeros, ones) equal; drawn ones pass a two-sample KS test against
    torch's own initial values at the 0.1% level (c(alpha) = 1.95)."""
    rng = np.random.default_rng(0)
    for path, module in _modules(name):
        drawn = convert.of_torch(module).torch_init(rng)
        for n, theirs in _own(module).items():
            mine = drawn[n]
            assert mine.shape == theirs.shape
            if np.all(theirs == theirs.flat[0]):
                assert np.all(mine == theirs.flat[0]), f"{path}.{n}"
            else:
                assert _ks_distance(mine, theirs) < 1.95 * np.sqrt(2 / mine.size), f"{path}.{n}"
    if name == "embedding padding_idx":                                 # torch zeroes the padding row
        assert not drawn["weight"][7].any() and drawn["weight"][6].any()


def _torch_flops(module, x):
    with FlopCounterMode(display=False) as counter:
        module(x, x, x) if isinstance(module, nn.MultiheadAttention) else module(x)
    return counter.get_total_flops()


@pytest.mark.parametrize("name, shape", [
    ("conv_transpose2d", (16, 5, 6)), ("conv_transpose1d", (6, 7)), ("gru 3 layers", (5, 12)),
    ("gru bidirectional", (5, 12)), ("multihead attention", (5, 64))])
def test_flops_are_torchs_count(name, shape):
    """Per sample, against torch's FlopCounterMode over a batch of 2 (nn.LSTM's aten::lstm
    it does not count; the LSTM kind's formula is the GRU's with 4 gates). Attention's
    out_proj is its own Linear kind, applied at each of the L positions."""
    modules = _modules(name)
    kinds = {path: convert.of_torch(m) for path, m in modules}
    ours = kinds[""].flops(shape) + (shape[0] * kinds["out_proj"].flops(shape[1:]) if "out_proj" in kinds else 0)
    top = modules[0][1]
    batch = (shape[0], 2, shape[1]) if isinstance(top, (nn.GRU, nn.MultiheadAttention)) and not getattr(
        top, "batch_first", False) else (2, *shape)
    assert 2 * ours == _torch_flops(top, torch.randn(batch))


@pytest.mark.parametrize("make, match", [
    (lambda: nn.LSTM(3, 4, proj_size=2), "nn.LSTM with proj_size=2>0: not supported; pass a convert= entry"),
    (lambda: nn.GRU(3, 4, bias=False), "nn.GRU with bias=False"),
    (lambda: nn.MultiheadAttention(8, 2, kdim=3, vdim=3), "nn.MultiheadAttention with kdim/vdim"),
    (lambda: nn.MultiheadAttention(8, 2, add_bias_kv=True), "add_bias_kv"),
    (lambda: nn.ConvTranspose2d(4, 4, 3, groups=2), "nn.ConvTranspose2d with groups=2"),
    (lambda: nn.Embedding(5, 2, max_norm=1.0), "nn.Embedding with max_norm"),
])
def test_what_no_kind_covers_is_one_line_naming_the_class(make, match):
    with pytest.raises(ValueError, match=match) as info:
        convert.of_torch(make())
    assert "\n" not in str(info.value) and "pass a convert= entry" in str(info.value)


def test_a_one_layer_recurrent_kind_is_the_single_cell_one():
    """Existing ports (nnx.RNN(cell)) keep their paths: layer 0's forward cell is `cell`."""
    one = convert.of_torch(nn.LSTM(3, 4, batch_first=True))
    assert one == convert.KINDS["LSTM"](3, 4) and [c for _, c, _ in one.cells()] == [("cell",)]
    two = convert.of_torch(nn.GRU(3, 4, num_layers=2, bidirectional=True))
    assert [(s, c) for s, c, _ in two.cells()] == [("_l0", ("cell",)), ("_l0_reverse", ("cell_reverse",)),
                                                   ("_l1", ("cell_l1",)), ("_l1_reverse", ("cell_l1_reverse",))]
