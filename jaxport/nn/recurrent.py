"""nn.LSTM and nn.GRU as Flax NNX modules: several layers, both directions, torch's
layouts in and out, built from jaxport's torch-semantics cells (deep_layers.py), each
layer and direction one fused `sequence` (jaxport/recurrent.py).

The cell of torch's parameter suffix `_lK[_reverse]` is the attribute `cell_lK[_reverse]`,
layer 0's forward cell plain `cell` (portcore.recurrent_kinds.cell_name): the layer
kinds convert torch's `weight_ih_l1_reverse` straight onto it, and a one-layer module's
state is nnx.RNN(cell)'s. Twins: torch.nn.LSTM, torch.nn.GRU.
"""
from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from jaxport.deep_layers import TorchGRUCell, TorchLSTMCell
from portcore.recurrent_kinds import cell_name


class _Recurrent(nnx.Module):
    cell_type: type = None
    torch_name = ""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 rngs: nnx.Rngs, dtype=jnp.float32):
        where = f"jaxport.nn.{self.torch_name}"
        if not bias:
            raise ValueError(f"{where}: bias=False is not supported (the cells carry torch's two biases); pass bias=True")
        if dropout:
            raise ValueError(f"{where}: dropout={dropout} between layers is not supported (torch's dropout stream "
                             "cannot be matched); pass dropout=0.0")
        if num_layers < 1:
            raise ValueError(f"{where}: num_layers={num_layers}; pass num_layers >= 1")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.batch_first, self.directions = batch_first, 2 if bidirectional else 1
        for layer in range(num_layers):
            features = input_size if layer == 0 else self.directions * hidden_size
            for rev in range(self.directions):
                setattr(self, cell_name("cell", layer, bool(rev)),
                        self.cell_type(features, hidden_size, rngs=rngs, dtype=dtype))

    def _run(self, x, h0, c0):
        """x (L, N, F) time-major; h0, c0 (layers * directions, N, H) or None. Returns the
        last layer's outputs (L, N, directions * H) and every cell's final h (and c)."""
        hs, cs = [], []
        for layer in range(self.num_layers):
            outs = []
            for rev in range(self.directions):
                cell, k = getattr(self, cell_name("cell", layer, bool(rev))), layer * self.directions + rev
                zero = jnp.zeros(x.shape[1:2] + (self.hidden_size,), x.dtype)
                h = zero if h0 is None else h0[k]
                carry = h if c0 is False else ((zero if c0 is None else c0[k]), h)   # nnx's LSTM carry is (c, h)
                # the cell's fused sequence (jaxport/recurrent.py) runs batch first
                ys, carry = cell.sequence(jnp.swapaxes(x[::-1] if rev else x, 0, 1), carry)
                ys = jnp.swapaxes(ys, 0, 1)
                outs.append(ys[::-1] if rev else ys)                  # the reverse pass's step t at t
                hs.append(carry if c0 is False else carry[1])
                cs.append(None if c0 is False else carry[0])
            x = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-1)
        return x, jnp.stack(hs), (None if c0 is False else jnp.stack(cs))

    def _layout_in(self, x):
        unbatched = x.ndim == 2
        if x.ndim not in (2, 3):
            raise ValueError(f"jaxport.nn.{self.torch_name}: input of shape {x.shape}; pass (L, N, F), "
                             "(N, L, F) with batch_first=True, or unbatched (L, F)")
        x = x[:, None] if unbatched else (jnp.swapaxes(x, 0, 1) if self.batch_first else x)
        return x, unbatched

    def _layout_out(self, out, unbatched, *states):
        if unbatched:
            return out[:, 0], tuple(s[:, 0] for s in states)
        return (jnp.swapaxes(out, 0, 1) if self.batch_first else out), states

    @staticmethod
    def _state_in(s, unbatched):
        return None if s is None else (s[:, None] if unbatched else s)


class LSTM(_Recurrent):
    """torch.nn.LSTM(input_size, hidden_size, num_layers, bias, batch_first, dropout,
    bidirectional): `model(x, (h0, c0))` -> (output, (h_n, c_n)) in torch's layouts:
    output (L, N, D * H) (batch_first: (N, L, D * H)), h_n and c_n (num_layers * D, N, H),
    index layer * D + direction. Unlike nnx.RNN over nnx.LSTMCell: time-major by
    default as torch, torch's two biases per gate (TorchLSTMCell), U(+-1/sqrt(H)) init,
    the reverse direction's outputs aligned to the input's steps, and layer k > 0 reads
    the concatenated directions. Not supported: proj_size, bias=False, dropout > 0."""
    cell_type = TorchLSTMCell
    torch_name = "LSTM"

    def __call__(self, x, hx=None):
        x, unbatched = self._layout_in(x)
        h0, c0 = (None, None) if hx is None else (self._state_in(s, unbatched) for s in hx)
        out, h_n, c_n = self._run(x, h0, c0)
        out, (h_n, c_n) = self._layout_out(out, unbatched, h_n, c_n)
        return out, (h_n, c_n)


class GRU(_Recurrent):
    """torch.nn.GRU: `model(x, h0)` -> (output, h_n), layouts as LSTM's. Unlike
    nnx.GRUCell: b_hn inside the reset product (TorchGRUCell), and the stacking,
    directions and layouts of torch's module."""
    cell_type = TorchGRUCell
    torch_name = "GRU"

    def __call__(self, x, hx=None):
        x, unbatched = self._layout_in(x)
        out, h_n, _ = self._run(x, self._state_in(hx, unbatched), False)
        out, (h_n,) = self._layout_out(out, unbatched, h_n)
        return out, h_n
