"""The PyTorch examples' word-level language model (pytorch/examples
word_language_model/model.py, class RNNModel; trained by main.py with
clip_grad_norm_(0.25) and a plain SGD step, NLLLoss on the log-probs) and its Flax NNX
port written from jaxport.nn (jaxport.nn.LSTM with num_layers=2, Embedding,
torch_linear) under torch's attribute names, so check_port needs no name_map and no
conversion hook.

The model runs sequence-first as published: forward(input (T, N), hidden ((nlayers,
N, nhid),) * 2) -> (log-probs (T * N, ntoken), hidden). check_port batches rows on
axis 0, so both sides are called through a subclass (`HarnessRNNModel`,
`NnxHarnessRNNModel`) that takes ids (N, T) and the carried state h0, c0 as
(N, nlayers, nhid), transposes them in, and returns the log-probs as (N, ntoken, T)
for nll_loss; the published forward runs unchanged inside."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch.nn.functional as F
from flax import nnx
from torch import nn

import jaxport.nn as jnn
from portcore.recurrent_kinds import LSTM as LSTMKind

NTOKEN, NINP, NHID, NLAYERS, SEQ = 30, 16, 16, 2, 6


# ---- torch: model.py's RNNModel as published (its LSTM/GRU/RNN choice and tying kept) ----
class RNNModel(nn.Module):
    """Container module with an encoder, a recurrent module, and a decoder."""

    def __init__(self, rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.5, tie_weights=False):
        super().__init__()
        self.ntoken = ntoken
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        if rnn_type in ["LSTM", "GRU"]:
            self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
        else:
            nonlinearity = {"RNN_TANH": "tanh", "RNN_RELU": "relu"}[rnn_type]
            self.rnn = nn.RNN(ninp, nhid, nlayers, nonlinearity=nonlinearity, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        if tie_weights:
            if nhid != ninp:
                raise ValueError("When using the tied flag, nhid must be equal to emsize")
            self.decoder.weight = self.encoder.weight
        self.init_weights()
        self.rnn_type, self.nhid, self.nlayers = rnn_type, nhid, nlayers

    def init_weights(self):
        initrange = 0.1
        nn.init.uniform_(self.encoder.weight, -initrange, initrange)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -initrange, initrange)

    def forward(self, input, hidden):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output)
        decoded = decoded.view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz):
        weight = next(self.parameters())
        if self.rnn_type == "LSTM":
            return (weight.new_zeros(self.nlayers, bsz, self.nhid), weight.new_zeros(self.nlayers, bsz, self.nhid))
        return weight.new_zeros(self.nlayers, bsz, self.nhid)


class HarnessRNNModel(RNNModel):
    """RNNModel called with check_port's rows on axis 0 (see the module's docstring)."""

    def forward(self, ids, h0, c0):
        n, t = ids.shape
        hidden = (h0.transpose(0, 1).contiguous(), c0.transpose(0, 1).contiguous())
        log_probs, hidden = super().forward(ids.t(), hidden)
        return log_probs.view(t, n, self.ntoken).permute(1, 2, 0), hidden


def torch_lm(dropout: float = 0.0) -> HarnessRNNModel:
    return HarnessRNNModel("LSTM", NTOKEN, NINP, NHID, NLAYERS, dropout=dropout)


# ---- NNX: the port, as a Flax user writes it from jaxport.nn --------------------------------
class NnxRNNModel(nnx.Module):
    """RNNModel('LSTM', ...) in Flax NNX. bugs: "hidden not carried" (the LSTM starts
    from zeros: the `hidden` argument is dropped)."""

    def __init__(self, ntoken, ninp, nhid, nlayers, dropout=0.0, *, rngs: nnx.Rngs, bugs=()):
        self.ntoken, self.nhid, self.nlayers, self.bugs = ntoken, nhid, nlayers, tuple(bugs)
        self.drop = nnx.Dropout(dropout, rngs=rngs)
        self.encoder = jnn.Embedding(ntoken, ninp, rngs=rngs)
        # jaxport.nn.LSTM refuses dropout between its layers (torch's stream cannot be
        # matched); check_port switches torch's off (port_models.torch_copy)
        self.rnn = jnn.LSTM(ninp, nhid, nlayers, dropout=0.0, rngs=rngs)
        self.decoder = jnn.torch_linear(nhid, ntoken, rngs=rngs, dtype=jnp.float32)
        key = rngs.params()                                            # init_weights
        k1, k2 = jax.random.split(key)
        self.encoder.embedding[...] = jax.random.uniform(k1, (ntoken, ninp), minval=-0.1, maxval=0.1)
        self.decoder.kernel[...] = jax.random.uniform(k2, (nhid, ntoken), minval=-0.1, maxval=0.1)
        self.decoder.bias[...] = jnp.zeros((ntoken,))

    def __call__(self, input, hidden):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, None if "hidden not carried" in self.bugs else hidden)
        output = self.drop(output)
        decoded = self.decoder(output)
        decoded = decoded.reshape(-1, self.ntoken)
        return jax.nn.log_softmax(decoded, axis=1), hidden

    def init_hidden(self, bsz):
        zeros = jnp.zeros((self.nlayers, bsz, self.nhid))
        return zeros, zeros


class NnxHarnessRNNModel(NnxRNNModel):
    def __call__(self, ids, h0, c0):
        n, t = ids.shape
        log_probs, hidden = super().__call__(ids.T, (jnp.swapaxes(h0, 0, 1), jnp.swapaxes(c0, 0, 1)))
        return log_probs.reshape(t, n, self.ntoken).transpose(1, 2, 0), hidden


def nnx_lm(bugs=(), dropout: float = 0.0) -> NnxHarnessRNNModel:
    return NnxHarnessRNNModel(NTOKEN, NINP, NHID, NLAYERS, dropout, rngs=nnx.Rngs(0), bugs=bugs)


# ---- data and training as main.py: next-token targets, a carried state --------------------
def lm_data(n: int = 8, seed: int = 0):
    """n sequences of SEQ tokens cut from one token stream (main.py's get_batch: the
    target is the input shifted by one), and a carried LSTM state (h0, c0) per row as
    main.py's repackaged hidden: x = (ids, h0, c0), y = next tokens (N, SEQ)."""
    rng = np.random.default_rng(seed)
    stream = rng.integers(0, NTOKEN, size=n * SEQ + 1)
    ids = np.stack([stream[i * SEQ:(i + 1) * SEQ] for i in range(n)])
    targets = np.stack([stream[i * SEQ + 1:(i + 1) * SEQ + 1] for i in range(n)])
    h0 = np.tanh(rng.normal(size=(n, NLAYERS, NHID)))
    c0 = 0.5 * rng.normal(size=(n, NLAYERS, NHID))
    return (ids, h0, c0), targets


# main.py: lr 20, clip 0.25, p.data.add_(p.grad, alpha=-lr) (SGD without momentum), NLLLoss
TRAIN = dict(loss="nll_loss", output=0, optimizer="sgd", lr=20.0, momentum=0.0, clip_grad_norm=0.25)


# ---- planted conversion bugs (convert={"rnn": fn}) ----------------------------------------
def _kind():
    return LSTMKind(NINP, NHID, num_layers=NLAYERS, flax_input_bias=True)


def layers_swapped(arrays):
    """torch's layer 0 loaded into the second layer's cell and layer 1 into the first
    (possible here since ninp == nhid)."""
    swap = {"_l0": "_l1", "_l1": "_l0"}
    return _kind().to_flax({name[:-3] + swap[name[-3:]]: v for name, v in arrays.items()})


def bias_hh_dropped(arrays):
    """bias_hh left at zero: the cells' hidden Linears get no torch bias."""
    out = _kind().to_flax(arrays)
    return {p: (np.zeros_like(v) if p[-2] in ("hi", "hf", "hg", "ho") and p[-1] == "bias" else v)
            for p, v in out.items()}

