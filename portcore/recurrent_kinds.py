"""The recurrent layer kinds: torch's stacked gates against Flax NNX's cells.

torch keeps one weight per side with the gates stacked along the rows (LSTM: i, f, g,
o; GRU: r, z, n) and two biases, bias_ih and bias_hh, per layer and direction: names
ending `_l0`, `_l0_reverse`, `_l1`, ... NNX's cells sit inside nnx.RNN, whose state
puts them under "cell" (`cell_path`). With several layers or both directions, each
torch suffix has a cell of its own beside it: `_lK` is `cell_lK`, `_reverse` appends
`_reverse`, and layer 0's forward cell keeps the plain name, so a one-layer kind is the
single-cell one (`cells`; jaxport.nn.LSTM and GRU hold their cells under these names).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from portcore.kinds import LayerKind

LSTM_GATES = (("ii", "hi"), ("if_", "hf"), ("ig", "hg"), ("io", "ho"))  # torch's i, f, g, o


def cell_name(base: str, layer: int, reverse: bool) -> str:
    """The NNX attribute of the cell for torch's suffix `_l{layer}[_reverse]`."""
    return base + (f"_l{layer}" if layer else "") + ("_reverse" if reverse else "")


@dataclass(frozen=True)
class _Recurrent(LayerKind):
    input_size: int
    hidden_size: int
    cell_path: tuple = ("cell",)
    num_layers: int = 1
    bidirectional: bool = False
    gates: ClassVar[int] = 1

    def cells(self) -> list[tuple[str, tuple, int]]:
        """(torch suffix, NNX cell path, input features) per layer and direction, in
        torch's order (layer by layer, forward before reverse)."""
        directions = 2 if self.bidirectional else 1
        return [(f"_l{layer}" + ("_reverse" if rev else ""),
                 self.cell_path[:-1] + (cell_name(self.cell_path[-1], layer, rev),),
                 self.input_size if layer == 0 else directions * self.hidden_size)
                for layer in range(self.num_layers) for rev in range(directions)]

    def param_shapes(self):
        rows, h, out = self.gates * self.hidden_size, self.hidden_size, {}
        for sfx, _, features in self.cells():
            out.update({f"weight_ih{sfx}": (rows, features), f"weight_hh{sfx}": (rows, h),
                        f"bias_ih{sfx}": (rows,), f"bias_hh{sfx}": (rows,)})
        return out

    @property
    def fan_in(self):
        return self.hidden_size          # torch draws every entry from U(+-1/sqrt(hidden))

    def torch_init(self, rng):
        bound = 1.0 / math.sqrt(self.hidden_size)
        return {n: rng.uniform(-bound, bound, size=s) for n, s in self.param_shapes().items()}

    def flops(self, in_shape):
        steps = in_shape[0]
        return sum(steps * 2 * self.gates * self.hidden_size * (features + self.hidden_size)
                   for _, _, features in self.cells())

    def _rows(self, k):
        return slice(k * self.hidden_size, (k + 1) * self.hidden_size)

    def to_flax(self, arrays):
        out = {}
        for sfx, c, _ in self.cells():
            out.update(self._cell_to_flax({n: np.asarray(arrays[n + sfx]) for n in _NAMES}, c))
        return out

    def from_flax(self, arrays):
        out = {}
        for sfx, c, _ in self.cells():
            out.update({n + sfx: v for n, v in self._cell_from_flax(arrays, c).items()})
        return out

    def _cell_to_flax(self, arrays, c):
        raise NotImplementedError

    def _cell_from_flax(self, arrays, c):
        raise NotImplementedError


_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


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

    def _cell_to_flax(self, arrays, c):
        w_ih, w_hh, b_ih, b_hh = (arrays[n] for n in _NAMES)
        out = {}
        for k, (gi, gh) in enumerate(LSTM_GATES):
            rows = self._rows(k)
            out[c + (gi, "kernel")] = np.ascontiguousarray(w_ih[rows].T)
            out[c + (gh, "kernel")] = np.ascontiguousarray(w_hh[rows].T)
            if self.flax_input_bias:
                out[c + (gi, "bias")], out[c + (gh, "bias")] = b_ih[rows], b_hh[rows]
            else:
                out[c + (gh, "bias")] = b_ih[rows] + b_hh[rows]
        return out

    def _cell_from_flax(self, arrays, c):
        w_ih = np.concatenate([np.asarray(arrays[c + (gi, "kernel")]).T for gi, _ in LSTM_GATES])
        w_hh = np.concatenate([np.asarray(arrays[c + (gh, "kernel")]).T for _, gh in LSTM_GATES])
        b_hh = np.concatenate([np.asarray(arrays[c + (gh, "bias")]) for _, gh in LSTM_GATES])
        if self.flax_input_bias:
            b_ih = np.concatenate([np.asarray(arrays[c + (gi, "bias")]) for gi, _ in LSTM_GATES])
        else:
            b_ih, b_hh = b_hh, np.zeros_like(b_hh)
        return {"weight_ih": np.ascontiguousarray(w_ih), "weight_hh": np.ascontiguousarray(w_hh),
                "bias_ih": b_ih, "bias_hh": b_hh}


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

    def _cell_to_flax(self, arrays, c):
        b_ih, b_hh = arrays["bias_ih"], arrays["bias_hh"]
        out = {c + ("dense_i", "kernel"): np.ascontiguousarray(arrays["weight_ih"].T),
               c + ("dense_h", "kernel"): np.ascontiguousarray(arrays["weight_hh"].T)}
        if self.flax_hidden_bias:
            out[c + ("dense_i", "bias")], out[c + ("dense_h", "bias")] = b_ih, b_hh
            return out
        if np.any(b_hh[self._rows(2)] != 0):
            raise ValueError("nnx.GRUCell has no slot for torch's b_hn (bias_hh_l0[2H:3H], inside "
                             "the reset gate's product): give the cell's dense_h a bias")
        out[c + ("dense_i", "bias")] = np.concatenate([b_ih[:2 * self.hidden_size] + b_hh[:2 * self.hidden_size],
                                                      b_ih[self._rows(2)]])
        return out

    def _cell_from_flax(self, arrays, c):
        b_ih = np.asarray(arrays[c + ("dense_i", "bias")])
        b_hh = np.asarray(arrays[c + ("dense_h", "bias")]) if self.flax_hidden_bias else np.zeros_like(b_ih)
        return {"weight_ih": np.ascontiguousarray(np.asarray(arrays[c + ("dense_i", "kernel")]).T),
                "weight_hh": np.ascontiguousarray(np.asarray(arrays[c + ("dense_h", "kernel")]).T),
                "bias_ih": b_ih, "bias_hh": b_hh}
