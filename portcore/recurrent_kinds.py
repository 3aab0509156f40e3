"""The recurrent layer kinds: torch's stacked gates against Flax NNX's cells.

torch keeps one weight per side with the gates stacked along the rows (LSTM: i, f, g,
o; GRU: r, z, n) and two biases, bias_ih and bias_hh. NNX's cells sit inside
nnx.RNN, whose state puts them under "cell" (`cell_path`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from portcore.kinds import LayerKind

LSTM_GATES = (("ii", "hi"), ("if_", "hf"), ("ig", "hg"), ("io", "ho"))  # torch's i, f, g, o


@dataclass(frozen=True)
class _Recurrent(LayerKind):
    input_size: int
    hidden_size: int
    cell_path: tuple = ("cell",)
    gates: ClassVar[int] = 1

    def param_shapes(self):
        rows, h = self.gates * self.hidden_size, self.hidden_size
        return {"weight_ih_l0": (rows, self.input_size), "weight_hh_l0": (rows, h),
                "bias_ih_l0": (rows,), "bias_hh_l0": (rows,)}

    @property
    def fan_in(self):
        return self.hidden_size          # torch draws every entry from U(+-1/sqrt(hidden))

    def torch_init(self, rng):
        bound = 1.0 / math.sqrt(self.hidden_size)
        return {n: rng.uniform(-bound, bound, size=s) for n, s in self.param_shapes().items()}

    def flops(self, in_shape):
        steps, features = in_shape
        return steps * 2 * self.gates * self.hidden_size * (features + self.hidden_size)

    def _rows(self, k):
        return slice(k * self.hidden_size, (k + 1) * self.hidden_size)


@dataclass(frozen=True)
class LSTM(_Recurrent):
    """nnx.LSTMCell has a Linear per gate and side: input ii, if_, ig, io (no bias) and
    hidden hi, hf, hg, ho (with bias). torch's gate k is rows k*H:(k+1)*H, transposed.

    flax_input_bias=False (a stock nnx.LSTMCell): torch's two biases are summed into the
    hidden Linear's one; back in torch form the sum is bias_ih and bias_hh is 0, so the
    model computes the same function but the file is not the one that came in.
    flax_input_bias=True: the cell's input Linears carry bias_ih (jaxport's own LSTM
    does this), and the round trip is exact.
    """
    flax_input_bias: bool = False
    torch_class: ClassVar[str] = "LSTM"
    gates: ClassVar[int] = 4

    def to_flax(self, arrays):
        w_ih, w_hh = np.asarray(arrays["weight_ih_l0"]), np.asarray(arrays["weight_hh_l0"])
        b_ih, b_hh = np.asarray(arrays["bias_ih_l0"]), np.asarray(arrays["bias_hh_l0"])
        out, c = {}, self.cell_path
        for k, (gi, gh) in enumerate(LSTM_GATES):
            rows = self._rows(k)
            out[c + (gi, "kernel")] = np.ascontiguousarray(w_ih[rows].T)
            out[c + (gh, "kernel")] = np.ascontiguousarray(w_hh[rows].T)
            if self.flax_input_bias:
                out[c + (gi, "bias")], out[c + (gh, "bias")] = b_ih[rows], b_hh[rows]
            else:
                out[c + (gh, "bias")] = b_ih[rows] + b_hh[rows]
        return out

    def from_flax(self, arrays):
        c = self.cell_path
        w_ih = np.concatenate([np.asarray(arrays[c + (gi, "kernel")]).T for gi, _ in LSTM_GATES])
        w_hh = np.concatenate([np.asarray(arrays[c + (gh, "kernel")]).T for _, gh in LSTM_GATES])
        b_hh = np.concatenate([np.asarray(arrays[c + (gh, "bias")]) for _, gh in LSTM_GATES])
        if self.flax_input_bias:
            b_ih = np.concatenate([np.asarray(arrays[c + (gi, "bias")]) for gi, _ in LSTM_GATES])
        else:
            b_ih, b_hh = b_hh, np.zeros_like(b_hh)
        return {"weight_ih_l0": np.ascontiguousarray(w_ih), "weight_hh_l0": np.ascontiguousarray(w_hh),
                "bias_ih_l0": b_ih, "bias_hh_l0": b_hh}


@dataclass(frozen=True)
class GRU(_Recurrent):
    """nnx.GRUCell stacks r, z, n like torch, in dense_i (I, 3H, with bias) and dense_h
    (H, 3H). torch's n gate is tanh(W_in x + b_in + r * (W_hn h + b_hn)): b_hn sits
    inside the reset product, and a stock nnx.GRUCell's dense_h has no bias, so it has
    no slot for it. flax_hidden_bias=True (jaxport's GRU cell: dense_h with a bias) maps
    both biases exactly; False sums b_hr, b_hz into dense_i's bias and refuses a
    nonzero b_hn."""
    flax_hidden_bias: bool = True
    torch_class: ClassVar[str] = "GRU"
    gates: ClassVar[int] = 3

    def to_flax(self, arrays):
        c = self.cell_path
        b_ih, b_hh = np.asarray(arrays["bias_ih_l0"]), np.asarray(arrays["bias_hh_l0"])
        out = {c + ("dense_i", "kernel"): np.ascontiguousarray(np.asarray(arrays["weight_ih_l0"]).T),
               c + ("dense_h", "kernel"): np.ascontiguousarray(np.asarray(arrays["weight_hh_l0"]).T)}
        if self.flax_hidden_bias:
            out[c + ("dense_i", "bias")], out[c + ("dense_h", "bias")] = b_ih, b_hh
            return out
        if np.any(b_hh[self._rows(2)] != 0):
            raise ValueError("nnx.GRUCell has no slot for torch's b_hn (bias_hh_l0[2H:3H], inside "
                             "the reset gate's product): give the cell's dense_h a bias")
        out[c + ("dense_i", "bias")] = np.concatenate([b_ih[:2 * self.hidden_size] + b_hh[:2 * self.hidden_size],
                                                      b_ih[self._rows(2)]])
        return out

    def from_flax(self, arrays):
        c = self.cell_path
        b_ih = np.asarray(arrays[c + ("dense_i", "bias")])
        b_hh = np.asarray(arrays[c + ("dense_h", "bias")]) if self.flax_hidden_bias else np.zeros_like(b_ih)
        return {"weight_ih_l0": np.ascontiguousarray(np.asarray(arrays[c + ("dense_i", "kernel")]).T),
                "weight_hh_l0": np.ascontiguousarray(np.asarray(arrays[c + ("dense_h", "kernel")]).T),
                "bias_ih_l0": b_ih, "bias_hh_l0": b_hh}
