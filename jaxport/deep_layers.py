"""The deep examples' layers: Flax NNX's own, initialised like torch's, with changes
only where Flax computes something else or has no slot for one of torch's parameters.

- torch_conv: nnx.Conv (NHWC, kernel (H, W, I, O)) with nn.Conv2d's U(+-1/sqrt(fan_in)).
- max_pool_2x2: nnx.max_pool's 2x2 window, stride 2, without lax.reduce_window.
- TorchBatchNorm: nnx.BatchNorm updating its running statistics as torch does, and
  summing its statistics and gradients in torch's order (jaxport/batch_norm.py).
- SharedDropout: nnx.Dropout with portcore/dropout_hash.py's mask instead of a JAX key.
- TorchLSTMCell / TorchGRUCell: nnx.LSTMCell / nnx.GRUCell given the biases torch has,
  and a whole sequence at once (`sequence`, jaxport/recurrent.py) as torch's CPU kernel.
Twins: torchref uses nn.Conv2d, nn.BatchNorm2d, nn.LSTM, nn.GRU themselves, and
torchref/shared_dropout.py.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from portcore import dropout_hash as dh
from jaxport.batch_norm import batch_norm_train, count
from jaxport.layers import uniform_symmetric
from jaxport.matmul import matmul
from jaxport.recurrent import gru_sequence, lstm_sequence


def torch_conv(in_ch: int, out_ch: int, kernel: int, padding: int, *, rngs, dtype=jnp.float32) -> nnx.Conv:
    """nnx.Conv like nn.Conv2d(in_ch, out_ch, kernel, padding=padding): kaiming_uniform(a=sqrt(5))
    is U(+-1/sqrt(fan_in)) with fan_in = in_ch * kernel**2, the bias's bound too."""
    bound = 1.0 / math.sqrt(in_ch * kernel * kernel)
    return nnx.Conv(in_ch, out_ch, (kernel, kernel), padding=((padding, padding),) * 2,
                    kernel_init=uniform_symmetric(bound), bias_init=uniform_symmetric(bound),
                    dtype=dtype, param_dtype=dtype, conv_general_dilated=patch_conv, rngs=rngs)


def patch_conv(x, kernel, strides, padding, lhs_dilation=None, rhs_dilation=None,
               dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
    """lax.conv_general_dilated for nnx.Conv's common case (NHWC, HWIO, stride 1, no
    dilation or groups) as patches times kernel: one dot_general.

    Why: XLA:CPU runs a convolution inside a loop (the compiled run is a lax.scan) far
    slower than the same op outside one, while matmuls in loops run at full speed.
    Measured on this 2-core CPU: the cnn's default run (460 steps, float32) trained in
    3.95 s with lax's convolution and 1.02 s with this; one jitted step outside the loop
    took 1.2 ms with lax's. The sum is the same; its order is XLA's dot's.
    """
    if (tuple(strides) != (1, 1) or any(d not in (None, 1, (1, 1)) for d in (lhs_dilation, rhs_dilation))
            or feature_group_count != 1 or isinstance(padding, str)
            or (kwargs.get("out_sharding") is not None)):
        return jax.lax.conv_general_dilated(x, kernel, strides, padding, lhs_dilation, rhs_dilation,
                                            dimension_numbers, feature_group_count, precision=precision, **kwargs)
    kh, kw, c, o = kernel.shape
    x = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    patches = jnp.stack([x[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)], axis=3)  # (N, H, W, kh*kw, C)
    if precision is not None:
        return jnp.einsum("nhwkc,kco->nhwo", patches, kernel.reshape(kh * kw, c, o), precision=precision)
    # one (N*H*W, kh*kw*C) x (kh*kw*C, O) matmul, whose kernel gradient runs in YNNPACK (jaxport/matmul.py)
    return matmul(patches.reshape(-1, kh * kw * c), kernel.reshape(kh * kw * c, o)).reshape(x.shape[0], h, w, o)


@jax.custom_vjp
def max_pool_2x2(x):                                          # (N, H, W, C) -> (N, H/2, W/2, C)
    """nnx.max_pool(x, (2, 2), strides=(2, 2)) on even H and W, as a max over each window's
    four entries. Why: XLA:CPU runs lax.reduce_window, and above all the gradient JAX
    builds from it (a reduce_window over value-and-index pairs), as slow loops inside the
    compiled run: 6 reduce-windows of ~190 us a step in a profile of the cnn. The gradient
    goes to the first maximum of each window in torch's scan order (row by row), as
    torch's max_pool2d backward and lax's gradient route ties.
    The windows are axes 2 and 4 of a reshape (N, H/2, 2, W/2, 2, C), a view: no
    transposed copy of the map forward or backward, and C stays the innermost axis, the
    one XLA vectorises (a first version put the window's 4 entries innermost)."""
    return _windows(x).max(axis=(2, 4))


def _windows(x):
    n, h, w, c = x.shape                                      # entry (i, j) of a window: [:, :, i, :, j]
    return x.reshape(n, h // 2, 2, w // 2, 2, c)


def _max_pool_fwd(x):
    v = _windows(x)
    # The first of equal maxima in scan order (0, 0), (0, 1), (1, 0), (1, 1), by a
    # tournament whose comparisons give the maximum too. Not `v == max(v)`: XLA may
    # compute v (a fused producer, such as BatchNorm's output) once for the max and again
    # for the comparison, an ulp apart, and then no entry equals the max (the cnn's
    # gradients at init went to the wrong entries with a BatchNorm summed in two stages).
    top_right, bottom_right = v[:, :, 0, :, 1] > v[:, :, 0, :, 0], v[:, :, 1, :, 1] > v[:, :, 1, :, 0]
    top = jnp.where(top_right, v[:, :, 0, :, 1], v[:, :, 0, :, 0])
    bottom = jnp.where(bottom_right, v[:, :, 1, :, 1], v[:, :, 1, :, 0])
    below = bottom > top
    first = jnp.where(below, jnp.where(bottom_right, 3, 2), jnp.where(top_right, 1, 0))
    return jnp.where(below, bottom, top), first.astype(jnp.int8)


def _max_pool_bwd(first, g):                                  # g (N, H/2, W/2, C)
    n, h, w, c = first.shape
    entry = jnp.arange(4, dtype=jnp.int8).reshape(1, 1, 2, 1, 2, 1)     # i * 2 + j at [:, :, i, :, j]
    routed = jnp.where(entry == first[:, :, None, :, None, :],
                       g[:, :, None, :, None, :], jnp.zeros((), g.dtype))
    return (routed.reshape(n, 2 * h, 2 * w, c),)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)


def flax_momentum(torch_momentum: float) -> float:
    """torch's momentum weights the new batch, Flax's the old running value."""
    return 1.0 - torch_momentum


class TorchBatchNorm(nnx.BatchNorm):
    """nn.BatchNorm2d's training mode in nnx.BatchNorm's slots (scale, bias, mean, var):
    the batch's statistics and their gradients summed as torch sums them
    (jaxport/batch_norm.py; one float32 reduction strays 10-26x further from float64).
    Flax updates the running variance with the biased batch variance; torch with the
    unbiased one, var * n / (n - 1), n the values per channel. Normalising uses the
    biased one in both. mask: the compiled loop pads the last partial batch with rows
    that must not count in the batch's statistics (torch never sees them)."""

    def __init__(self, num_features: int, *, momentum: float = 0.1, eps: float = 1e-5, rngs, dtype=jnp.float32):
        super().__init__(num_features, momentum=flax_momentum(momentum), epsilon=eps,
                         dtype=dtype, param_dtype=dtype, rngs=rngs)
        # nnx.BatchNorm keeps its statistics in float32 whatever param_dtype says; in
        # float64 they would lose the bits that the weights round trip must keep.
        self.mean = nnx.BatchStat(jnp.zeros((num_features,), dtype))
        self.var = nnx.BatchStat(jnp.ones((num_features,), dtype))

    def __call__(self, x, *, mask=None):                      # x (N, H, W, C), mask (N,)
        if self.use_running_average:
            return super().__call__(x)
        # the statistics and their gradients summed per image, then over the batch
        # (jaxport/batch_norm.py: one float32 reduction over N x H x W strays from torch)
        y, mean, var = batch_norm_train(x, self.scale[...], self.bias[...], mask, self.epsilon)
        n = count(x, mask)
        m = self.momentum
        self.mean[...] = jax.lax.stop_gradient(m * self.mean[...] + (1 - m) * mean)
        self.var[...] = jax.lax.stop_gradient(m * self.var[...] + (1 - m) * var * (n / (n - 1)))
        return y


class DropoutStep(nnx.Variable):
    """SharedDropout's count of train-mode calls: model state, not a parameter."""


class SharedDropout(nnx.Dropout):
    """nnx.Dropout (rate, deterministic, model.train()/eval()) whose mask is the hash of
    (key, step, sample, unit) that torchref/shared_dropout.py computes in int64: JAX's
    PRNG can never draw torch's bits. unit_order: each input position's index in torch's
    order (the flattened NCHW map's C, H, W), since Flax's NHWC flattens as H, W, C."""

    def __init__(self, rate: float, *, unit_order=None, key: int = 0):
        super().__init__(rate, deterministic=False)
        self.key = key
        self.unit_order = None if unit_order is None else tuple(int(u) for u in unit_order)
        self.step = DropoutStep(jnp.zeros((1,), jnp.uint32))   # (1,), as torch's buffer

    def __call__(self, x):                                    # (N, F)
        if self.deterministic or self.rate == 0.0:
            return x
        units = np.arange(x.shape[1]) if self.unit_order is None else np.array(self.unit_order)
        k = _mix32(_mix32(jnp.uint32(self.key & dh.MASK32)) ^ self.step[...])
        h = _mix32(k ^ jnp.arange(x.shape[0], dtype=jnp.uint32)[:, None])
        h = _mix32(h ^ jnp.asarray(units, jnp.uint32)[None, :])
        self.step[...] = self.step[...] + jnp.uint32(1)
        keep = h >= jnp.uint32(dh.threshold(self.rate))
        return jnp.where(keep, x / (1 - self.rate), jnp.zeros_like(x))


def _mix32(x):
    # uint32 arithmetic wraps mod 2**32: the low 32 bits of torch's int64 products
    x = x ^ (x >> 16)
    x = x * jnp.uint32(dh.MUL1)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(dh.MUL2)
    return x ^ (x >> 16)


def _torch_rnn_init(hidden: int):
    # nn.LSTM / nn.GRU draw every weight and bias from U(+-1/sqrt(hidden_size))
    return uniform_symmetric(1.0 / math.sqrt(hidden))


class TorchLSTMCell(nnx.LSTMCell):
    """nnx.LSTMCell with a bias on the input Linears ii, if_, ig, io too. Flax leaves
    them without one (input and recurrent sums need only one bias); torch keeps two,
    bias_ih and bias_hh. Summing them into hi..ho would compute the same function, but
    a saved torch model could not come back bit for bit (b_ih + b_hh cannot be split
    again), and torch adds them in this order: (W_ih x + b_ih) + (W_hh h + b_hh)."""

    def __init__(self, in_features: int, hidden: int, *, rngs, dtype=jnp.float32):
        init = _torch_rnn_init(hidden)
        super().__init__(in_features, hidden, kernel_init=init, recurrent_kernel_init=init,
                         bias_init=init, dtype=dtype, param_dtype=dtype, rngs=rngs)
        for gate in ("ii", "if_", "ig", "io"):
            setattr(self, gate, nnx.Linear(in_features, hidden, kernel_init=init, bias_init=init,
                                           dtype=dtype, param_dtype=dtype, rngs=rngs))

    def sequence(self, x, carry=None):
        """(every step's h (B, T, H), (c_T, h_T)) over x (B, T, I) from carry (c0, h0),
        zeros by default: nnx.RNN(self)'s result, with the gates' Linears side by side
        in torch's order so that a step is one matmul (jaxport/recurrent.py)."""
        ins, hids = (self.ii, self.if_, self.ig, self.io), (self.hi, self.hf, self.hg, self.ho)
        w_i, b_i, w_h, b_h = (jnp.concatenate([getattr(l, name)[...] for l in side], axis=-1)
                              for side in (ins, hids) for name in ("kernel", "bias"))
        zeros = jnp.zeros(x.shape[:1] + (self.hidden_features,), w_h.dtype)
        c0, h0 = carry if carry is not None else (zeros, zeros)
        hs, h, c = lstm_sequence(w_i, b_i, w_h, b_h, x.astype(w_h.dtype), h0, c0)
        return hs, (c, h)


LSTM_GATES = (("ii", "if_", "ig", "io"), ("hi", "hf", "hg", "ho"))   # x's side, h's side; torch's order


def pack_lstm_cell(arrays: dict):
    """A TorchLSTMCell's 16 arrays, {(gate, "kernel" | "bias"): array}, as one
    (I + H + 2, 4H) block: rows W_i, W_h, b_i, b_h, the gates side by side in torch's
    order, as `sequence` concatenates them for jaxport/recurrent.py."""
    side = lambda gates, name: jnp.concatenate([arrays[g, name] for g in gates], axis=-1)   # noqa: E731
    return jnp.concatenate([side(LSTM_GATES[0], "kernel"), side(LSTM_GATES[1], "kernel"),
                            side(LSTM_GATES[0], "bias")[None], side(LSTM_GATES[1], "bias")[None]])


def lstm_cell_view(block, gate: str, name: str):
    """One of pack_lstm_cell's arrays, a slice of the block."""
    hidden = block.shape[1] // 4
    inputs = block.shape[0] - hidden - 2
    h_side = gate in LSTM_GATES[1]
    cols = slice(k := LSTM_GATES[h_side].index(gate) * hidden, k + hidden)
    if name == "bias":
        return block[-1 if h_side else -2, cols]
    return block[inputs:inputs + hidden, cols] if h_side else block[:inputs, cols]


class TorchGRUCell(nnx.GRUCell):
    """nnx.GRUCell with a bias on dense_h. Flax computes n = tanh(W_in x + b_in + r * (W_hn h)),
    torch n = tanh(W_in x + b_in + r * (W_hn h + b_hn)): b_hn sits inside the reset
    product, where Flax has no slot. With the bias, dense_h(h) is torch's W_hh h + b_hh
    and GRUCell's own __call__ is torch's cell; both split the gates in the order r, z, n."""

    def __init__(self, in_features: int, hidden: int, *, rngs, dtype=jnp.float32):
        init = _torch_rnn_init(hidden)
        super().__init__(in_features, hidden, kernel_init=init, recurrent_kernel_init=init,
                         bias_init=init, dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.dense_h = nnx.Linear(hidden, 3 * hidden, kernel_init=init, bias_init=init,
                                  dtype=dtype, param_dtype=dtype, rngs=rngs)

    def __call__(self, carry, inputs):
        """One step in torch's order: h' = (h - n) z + n (Flax's (1 - z) n + z h rounds
        differently), as `sequence` computes it."""
        hidden = self.hidden_features
        xi, hg = self.dense_i(inputs), self.dense_h(carry)
        r = jax.nn.sigmoid(xi[..., :hidden] + hg[..., :hidden])
        z = jax.nn.sigmoid(xi[..., hidden:2 * hidden] + hg[..., hidden:2 * hidden])
        n = jnp.tanh(xi[..., 2 * hidden:] + r * hg[..., 2 * hidden:])
        h = (carry - n) * z + n
        return h, h

    def sequence(self, x, carry=None):
        """(every step's h (B, T, H), h_T) over x (B, T, I) from carry h0, zeros by
        default: nnx.RNN(self)'s result, a step one matmul (jaxport/recurrent.py)."""
        w_h = self.dense_h.kernel[...]
        h0 = carry if carry is not None else jnp.zeros(x.shape[:1] + (self.hidden_features,), w_h.dtype)
        hs, h = gru_sequence(self.dense_i.kernel[...], self.dense_i.bias[...], w_h, self.dense_h.bias[...],
                             x.astype(w_h.dtype), h0)
        return hs, h


class SequenceRNN(nnx.RNN):
    """nnx.RNN over a TorchLSTMCell or TorchGRUCell whose call runs the cell's `sequence`
    (jaxport/recurrent.py) instead of scanning the cell step by step: the same state
    (rnn.cell.*), the same outputs (every step's h, batch first), and still a module
    call, which the locator records at the RNN's path. Batch first, forward only."""

    def __call__(self, inputs, *, initial_carry=None, return_carry=False):
        if self.time_major or self.reverse:
            raise ValueError("SequenceRNN runs batch first and forward only (time_major=False, reverse=False)")
        outputs, carry = self.cell.sequence(inputs, initial_carry)
        return (carry, outputs) if return_carry else outputs

