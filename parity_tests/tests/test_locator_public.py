"""The locator on models as people write them (layouts.py, locate_trace.py):

- a word-level LM as the PyTorch examples write it (word_language_model/model.py: one
  Dropout module applied to the embedding and to the LSTM's output), its embedding
  width 24 and its hidden width 16. The locator recorded a module at its last call and
  crashed adding a (16, 10, 16) perturbation to the (16, 10, 24) first call; records
  are now keyed by call;
- a model that runs its LSTM sequence-first inside (x.transpose(0, 1), nn.LSTM without
  batch_first) against an nnx.RNN run batch-first, with as many steps as rows: the
  shapes are equal both ways, and the old guess by shape compared (T, N, H) with
  (N, T, H) and blamed the correct port's `rnn`;
- a CNN taking NCHW and moving to NHWC inside, with 8 channels on 8x8 maps: the old
  guess compared (N, C, H, W) with (N, H, W, C) and blamed the correct port's `conv1`.

Each correct port passes check_port in both dtypes and locates nothing at half the
locator's float32 tolerance; each planted bug fails and is located at its module."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from torch import nn

from jaxport.deep_layers import TorchBatchNorm
from parity_tests.engine.locator.locate import LOCATE_RTOL
from parity_tests.harness import check_port, locate_divergence
from parity_tests.tests.harness_models import BiasedLSTMCell, assert_passed
from portcore.recurrent_kinds import LSTM

V, E, H, T = 20, 24, 16, 10


class TorchWordLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.0)
        self.encoder, self.rnn, self.decoder = nn.Embedding(V, E), nn.LSTM(E, H, batch_first=True), nn.Linear(H, V)

    def forward(self, ids):                                 # (N, T) -> logits (N, V, T)
        out, _ = self.rnn(self.drop(self.encoder(ids)))
        return self.decoder(self.drop(out)).transpose(1, 2)


class NnxWordLM(nnx.Module):
    """bugs: "scaled embedding" (x sqrt(E) after the lookup, a transformer habit),
    "hard_tanh cell" (the cell's tanh replaced)."""

    def __init__(self, bugs=()):
        rngs = nnx.Rngs(0)
        self.drop = nnx.Dropout(0.0)
        self.encoder = nnx.Embed(V, E, rngs=rngs)
        cell = BiasedLSTMCell(E, H, rngs=rngs)
        if "hard_tanh cell" in bugs:
            cell.activation_fn = jax.nn.hard_tanh
        self.rnn, self.decoder = nnx.RNN(cell), nnx.Linear(H, V, rngs=rngs)
        self.scale = float(np.sqrt(E)) if "scaled embedding" in bugs else 1.0

    def __call__(self, ids):
        out = self.rnn(self.drop(self.encoder(ids) * self.scale))
        return self.decoder(self.drop(out)).transpose(0, 2, 1)


def lm_data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, size=(n, T)), rng.integers(0, V, size=(n, T))


S, F, HS, C = 8, 5, 6, 3          # S steps = S rows in the locator's batch: (T, N, H) has (N, T, H)'s shape


class TorchSeqFirst(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.fc = nn.LSTM(F, HS), nn.Linear(HS, C)

    def forward(self, x):                                   # (N, S, F)
        out, _ = self.rnn(x.transpose(0, 1))                # sequence-first: (S, N, HS)
        return self.fc(out).mean(0)


class NnxSeqFirst(nnx.Module):
    def __init__(self):
        rngs = nnx.Rngs(0)
        self.rnn, self.fc = nnx.RNN(BiasedLSTMCell(F, HS, rngs=rngs)), nnx.Linear(HS, C, rngs=rngs)

    def __call__(self, x):                                  # batch-first throughout: (N, S, HS)
        return self.fc(self.rnn(x)).mean(1)


def seq_data(n=S, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, S, F)), rng.integers(0, C, size=n)


def gates_out_of_order(arrays):
    """torch's gates taken as i, f, o, g (they are i, f, g, o)."""
    out = LSTM(F, HS, flax_input_bias=True).to_flax(arrays)
    swap = {"ig": "io", "io": "ig", "hg": "ho", "ho": "hg"}
    return {(p[0], swap.get(p[1], p[1])) + p[2:]: v for p, v in out.items()}


class TorchSquareCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.fc = nn.Conv2d(8, 8, 3, padding=1), nn.Linear(8, 3)

    def forward(self, x):                                   # (N, 1, 8, 8); 8 channels on 8x8 maps
        x = torch.relu(self.conv2(torch.relu(self.bn(self.conv1(x)))))
        return self.fc(x.mean(dim=(2, 3)))


class NnxSquareCNN(nnx.Module):
    def __init__(self, bn_eps=1e-5):
        rngs = nnx.Rngs(0)
        self.conv1 = nnx.Conv(1, 8, (3, 3), padding=1, rngs=rngs)
        self.bn = TorchBatchNorm(8, eps=bn_eps, rngs=rngs, dtype=jnp.float32)
        self.conv2, self.fc = nnx.Conv(8, 8, (3, 3), padding=1, rngs=rngs), nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):                                  # NCHW in, NHWC inside
        x = x.transpose(0, 2, 3, 1)
        x = nnx.relu(self.conv2(nnx.relu(self.bn(self.conv1(x)))))
        return self.fc(x.mean(axis=(1, 2)))


def cnn_data(n=12, seed=0):
    from portcore import digits
    x, y = digits.load_digits()
    rows = np.random.default_rng(seed).choice(len(x), n, replace=False)
    return x[rows].reshape(n, 1, 8, 8), (y[rows] % 3).astype(np.int64)


def swapped_spatial_kernel(arrays):
    """conv1's kernel as (W, H, I, O): the right shape for a square kernel."""
    return {"kernel": np.asarray(arrays["weight"]).transpose(3, 2, 1, 0), "bias": np.asarray(arrays["bias"])}


RUNGS = (2, 3, 4)                 # the locator is what is tested, not the free run
LM = (TorchWordLM, lm_data, dict(loss="cross_entropy", optimizer="adam", lr=1e-2, batch_size=8))
SEQ = (TorchSeqFirst, seq_data, dict(loss="cross_entropy", optimizer="adam", lr=1e-2, batch_size=4))
CNN = (TorchSquareCNN, cnn_data, dict(loss="cross_entropy", optimizer="sgd", lr=0.1, batch_size=6))
CORRECT = {"word lm": (LM, NnxWordLM), "sequence-first lstm": (SEQ, NnxSeqFirst), "nchw to nhwc inside": (CNN, NnxSquareCNN)}


# The first tier keeps the sequence-first LSTM in float32 (the tolerance a correct port
# comes near); the other ports and float64 run in the second tier.
@pytest.mark.parametrize("port, dtype", [
    pytest.param(port, dtype, marks=() if (port, dtype) == ("sequence-first lstm", "float32") else pytest.mark.slow)
    for port in CORRECT for dtype in ("float64", "float32")])
def test_correct_port_passes_and_locates_nothing_at_half_the_float32_tolerance(port, dtype):
    (torch_model, data, kw), nnx_model = CORRECT[port]
    x, y = data()
    torch.manual_seed(0)
    assert_passed(check_port(torch_model(), nnx_model(), x, y, dtype=dtype, steps=2, rungs=RUNGS, **kw), RUNGS)
    if dtype == "float32":            # where the margin is thin (float64 ports: <= 4.1e-15, locate.py)
        torch.manual_seed(0)
        assert locate_divergence(torch_model(), nnx_model(), x, y, dtype=dtype, rtol=LOCATE_RTOL[dtype] / 2,
                                 loss=kw["loss"]) is None


BUGS = {
    "lm: embedding x sqrt(E)": (LM, lambda: NnxWordLM(bugs=("scaled embedding",)), {}, "drop",
                                "arises between encoder and drop (call 1 of 2)"),
    "lm: hard_tanh in the cell": (LM, lambda: NnxWordLM(bugs=("hard_tanh cell",)), {}, "rnn", None),
    "sequence-first: gates i,f,o,g": (SEQ, NnxSeqFirst, dict(convert={"rnn": gates_out_of_order}), "rnn", None),
    "nchw: bn eps 1e-3": (CNN, lambda: NnxSquareCNN(bn_eps=1e-3), {}, "bn", None),
    "nchw: conv1 kernel W, H": (CNN, NnxSquareCNN, dict(convert={"conv1": swapped_spatial_kernel}), "conv1", None),
}


@pytest.mark.parametrize("bug", list(BUGS))
def test_planted_bug_fails_at_rung_2_and_is_located_at_its_module(bug):
    (torch_model, data, kw), nnx_model, extra, layer, note = BUGS[bug]
    x, y = data()
    torch.manual_seed(0)
    report = check_port(torch_model(), nnx_model(), x, y, dtype="float64", steps=2, rungs=RUNGS, **kw, **extra)
    assert not report.passed and report.first_failure["rung"] == 2
    assert report.located["layer"] == layer and report.located["quantity"] == "output", report.located
    assert report.located["max_over_largest"] > LOCATE_RTOL["float64"]
    assert (note is None) == ("note" not in report.located) and (note is None or note in report.located["note"])
