"""A whole LSTM or GRU sequence as torch's CPU kernel computes it: the input side of
every time step in one matmul before the time loop (an unrolled LSTM's in matmuls of 2
steps), one (H, 4H) (GRU: (H, 3H)) matmul per step inside it, and a hand-written
backward whose weight gradients are matmuls after the loop (an unrolled LSTM's one per
step, summed in torch's order).

Why: nnx.RNN over nnx.LSTMCell runs 8 Linears a step, and JAX's gradient of the scan
adds per step a weight-gradient matmul per Linear and a bias reduction: ~760 small ops
(thunks) a training step for the lstm, so the step was bound by the number of ops, not
by FLOPs. Here the loop keeps one matmul a step forward and one backward
(dh = dgates W_h^T); dW_h, dW_i and the biases are computed after it.
Short sequences (the digits' 8 rows) are unrolled: XLA:CPU's while loop costs a copy of
the carry and a dynamic-update-slice per saved array and step.

Numerics, as torch (aten/src/ATen/native/RNN.cpp, the CPU cells with pre_compute_input):
gates = (x W_i + b_i) + (h W_h + b_h); LSTM c' = f c + i g, h' = o tanh(c'); GRU
n = tanh(x_n + b_in + r (h W_hn + b_hn)), h' = (h - n) z + n. The derivatives are the
closed forms torch's autograd uses (sigmoid' = (1 - y) y, tanh' = 1 - y^2). One
difference: sigmoid(v) is computed as 0.5 tanh(v / 2) + 0.5 (the same function, within
an ulp or two of torch's 1 / (1 + exp(-v))), so that the four gates are one tanh over
the (B, 4H) row block: XLA:CPU ran three sigmoid slices, a tanh slice and their
concatenation as five ops a step.
Shapes: x (B, T, I) batch first; kernels (I, G*H) and (H, G*H) with the gates side by
side in torch's order (LSTM i, f, g, o; GRU r, z, n); h0, c0 (B, H).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxport.matmul import weight_grad

UNROLL_UP_TO = 16          # time steps; a longer sequence runs as a lax.scan loop
LSTM_INPUT_STEPS = 2       # time steps per input-side matmul of an unrolled LSTM


def _scan(step, carry, xs, reverse=False):
    steps = jax.tree.leaves(xs)[0].shape[0]
    return jax.lax.scan(step, carry, xs, reverse=reverse, unroll=steps <= UNROLL_UP_TO)


def _blocks(values, hidden, dtype):
    """A (G*H,) row of per-gate constants."""
    return jnp.asarray(np.repeat(values, hidden), dtype)


def _gate_tanh(pre, scale, shift):
    """sigmoid on the blocks where scale is 0.5, tanh where it is 1: one tanh for all."""
    return jnp.tanh(pre * scale) * scale + shift


def _time_major(x):
    return jnp.swapaxes(x, 0, 1)


def _input_side(x, w_i, b_i, steps=None):
    """(T, B, G*H): every step's x W_i + b_i as one (T*B, I) x (I, G*H) matmul, time
    major for the loop; or one matmul per `steps` time steps, the same numbers (each
    row's sum is the same whichever rows share the matmul)."""
    t, b, i = x.shape
    steps = steps or t
    return jnp.concatenate([(x[s:s + steps].reshape(-1, i) @ w_i + b_i).reshape(-1, b, w_i.shape[1])
                            for s in range(0, t, steps)])


def _with_ones(a):
    """a (..., K) with a column of ones: [a, 1]^T d is a's weight gradient over its bias's."""
    return jnp.concatenate([a, jnp.ones(a.shape[:-1] + (1,), a.dtype)], axis=-1)


def _weight_grads(x, h_prev, d_in, d_hid):
    """dW_i, db_i, dW_h, db_h, each one contraction over all T x B rows (time major);
    the weights' as jaxport/matmul.py's weight_grad (YNNPACK for the tutorial's 512 rows,
    Eigen from 1024). (The biases folded into the matmuls as a column of ones, as the
    LSTM's are, cut the gru's step from 186 to 170 ops but not its time: kept as sums.)"""
    rows = lambda a: a.reshape(-1, a.shape[-1])          # noqa: E731
    return (weight_grad(x, d_in), rows(d_in).sum(axis=0), weight_grad(h_prev, d_hid),
            rows(d_hid).sum(axis=0))


def _lstm_weight_grads(x, h_prev, d_gates):
    """dW_i, db (b_i's and b_h's: both gradients are d_gates' column sums) and dW_h as
    matmuls [x, h_prev, 1]^T d_gates: one per time step of an unrolled sequence, summed
    from the last step to the first, as torch's autograd accumulates W_hh's per-step
    gradients; one over all T x B rows for a long one. Why the ones column: XLA split
    the column sums over the time loop's concatenation into one reduction per time step.
    Why per step: the one matmul needed d_gates of all steps as one (T*B, 4H)
    concatenation and the rows [x, h_prev, 1] as one transposed (I + H + 1, T*B) copy,
    both slow element-by-element ops on XLA:CPU (~45 us each a step). The float64 run's
    largest drift from torch, as a share of its bound (MKL AUTO / AVX2 / COMPATIBLE):
    one matmul 0.32 / 0.03 / 0.33, per step in this order 0.29 / 0.06 / 0.29 (per step
    in time order 0.36 on AUTO, over 2-step chunks 0.40; docs/speed.md)."""
    inputs, steps = x.shape[-1], x.shape[0]
    z = _with_ones(jnp.concatenate([x, h_prev], axis=-1))
    if steps > UNROLL_UP_TO:
        stacked = weight_grad(z, d_gates)
    else:
        stacked = weight_grad(z[-1], d_gates[-1])
        for t in reversed(range(steps - 1)):
            stacked = stacked + weight_grad(z[t], d_gates[t])
    return stacked[:inputs], stacked[-1], stacked[inputs:-1]


def _previous(first, later):
    """(T, B, H): the state each step started from."""
    return jnp.concatenate([first[None], later[:-1]])


# ---- LSTM ------------------------------------------------------------------------------

def _lstm_forward(w_i, b_i, w_h, b_h, x, h0, c0):
    hidden = w_h.shape[0]
    scale, shift = _blocks([0.5, 0.5, 1.0, 0.5], hidden, w_h.dtype), _blocks([0.5, 0.5, 0.0, 0.5], hidden, w_h.dtype)

    def step(state, xi):                                  # state: c, h, tanh(c), each (B, H)
        act = _gate_tanh(xi + (state[1] @ w_h + b_h), scale, shift)
        i, f, g, o = (act[:, k * hidden:(k + 1) * hidden] for k in range(4))
        c = f * state[0] + i * g
        tc = jnp.tanh(c)
        # three arrays, not one stack: a stack is a concatenation computed in one loop,
        # which XLA:CPU runs slower than the three separate results
        state = (c, o * tc, tc)
        return state, (state, act)

    state0 = (c0, h0, jnp.tanh(c0))
    # the input side in matmuls of LSTM_INPUT_STEPS steps: the gate fusions that slice
    # one (T*B, 4H) buffer read 512 KB for the digits, and XLA:CPU splits every fusion
    # reading that much across its threads (9 split ops a training step, now 1)
    steps = LSTM_INPUT_STEPS if x.shape[1] <= UNROLL_UP_TO else None
    state, (states, acts) = _scan(step, state0, _input_side(_time_major(x), w_i, b_i, steps))
    return (states[1], state[1], state[0]), (states, acts)


@jax.custom_vjp
def lstm_sequence(w_i, b_i, w_h, b_h, x, h0, c0):
    """(hs (B, T, H), h_T, c_T) of torch's LSTM layer over x (B, T, I)."""
    (hs, h, c), _ = _lstm_forward(w_i, b_i, w_h, b_h, x, h0, c0)
    return _time_major(hs), h, c


def _lstm_fwd(w_i, b_i, w_h, b_h, x, h0, c0):
    (hs, h, c), saved = _lstm_forward(w_i, b_i, w_h, b_h, x, h0, c0)
    return (_time_major(hs), h, c), (w_i, w_h, x, h0, c0, saved)


def _lstm_bwd(res, cts):
    w_i, w_h, x, h0, c0, (states, acts) = res
    d_hs, d_hT, d_cT = cts
    w_h_t, hidden = w_h.T, w_h.shape[0]
    is_g = _blocks([0.0, 0.0, 1.0, 0.0], hidden, w_h.dtype)

    def step(carry, inputs):
        dh, dc = carry
        dh_out, c_prev, tc, act = inputs
        i, f, g, o = (act[:, k * hidden:(k + 1) * hidden] for k in range(4))
        dh = dh + dh_out
        dc = dc + dh * o * (1 - tc * tc)
        # d(act) times the activation's derivative, (1 - y) y for a sigmoid and
        # (1 - y)(1 + y) = 1 - y^2 for the tanh, over the whole (B, 4H) block at once
        d_act = jnp.concatenate([dc, dc, dc, dh], axis=-1) * jnp.concatenate([g, c_prev, i, tc], axis=-1)
        d_gates = d_act * (1 - act) * (act + is_g)
        return (d_gates @ w_h_t, dc * f), d_gates

    inputs = (_time_major(d_hs), _previous(c0, states[0]), states[2], acts)
    (dh0, dc0), d_gates = _scan(step, (d_hT, d_cT), inputs, reverse=True)
    dw_i, db, dw_h = _lstm_weight_grads(_time_major(x), _previous(h0, states[1]), d_gates)
    db_i = db_h = db
    return dw_i, db_i, dw_h, db_h, _time_major(d_gates @ w_i.T), dh0, dc0


lstm_sequence.defvjp(_lstm_fwd, _lstm_bwd)


# ---- GRU -------------------------------------------------------------------------------

def _gru_forward(w_i, b_i, w_h, b_h, x, h0):
    hidden = w_h.shape[0]
    half = _blocks([0.5, 0.5], hidden, w_h.dtype)

    def step(h, xi):
        hg = h @ w_h + b_h
        rz = _gate_tanh(xi[:, :2 * hidden] + hg[:, :2 * hidden], half, half)
        r, z, hn = rz[:, :hidden], rz[:, hidden:], hg[:, 2 * hidden:]
        n = jnp.tanh(xi[:, 2 * hidden:] + r * hn)
        h_new = (h - n) * z + n
        return h_new, (h_new, (rz, n, hn))

    h, (hs, saved) = _scan(step, h0, _input_side(_time_major(x), w_i, b_i))
    return (hs, h), (hs, saved)


@jax.custom_vjp
def gru_sequence(w_i, b_i, w_h, b_h, x, h0):
    """(hs (B, T, H), h_T) of torch's GRU layer over x (B, T, I)."""
    (hs, h), _ = _gru_forward(w_i, b_i, w_h, b_h, x, h0)
    return _time_major(hs), h


def _gru_fwd(w_i, b_i, w_h, b_h, x, h0):
    (hs, h), saved = _gru_forward(w_i, b_i, w_h, b_h, x, h0)
    return (_time_major(hs), h), (w_i, w_h, x, h0, saved)


def _gru_bwd(res, cts):
    w_i, w_h, x, h0, (hs, (rzs, ns, hns)) = res
    d_hs, d_hT = cts
    w_h_t, hidden = w_h.T, w_h.shape[0]

    def step(dh, inputs):
        dh_out, h, rz, n, hn = inputs
        r, z = rz[:, :hidden], rz[:, hidden:]
        dh = dh + dh_out
        dn = dh * (1 - z) * (1 - n * n)                   # through h' = (h - n) z + n, then tanh
        d_rz = jnp.concatenate([dn * hn, dh * (h - n)], axis=-1) * (1 - rz) * rz
        d_in = jnp.concatenate([d_rz, dn], axis=-1)       # x's side: n's input term has no r
        d_hid = jnp.concatenate([d_rz, dn * r], axis=-1)
        return dh * z + d_hid @ w_h_t, (d_in, d_hid)

    h_prev = _previous(h0, hs)
    dh0, (d_in, d_hid) = _scan(step, d_hT, (_time_major(d_hs), h_prev, rzs, ns, hns), reverse=True)
    dw_i, db_i, dw_h, db_h = _weight_grads(_time_major(x), h_prev, d_in, d_hid)
    return dw_i, db_i, dw_h, db_h, _time_major(d_in @ w_i.T), dh0


gru_sequence.defvjp(_gru_fwd, _gru_bwd)
