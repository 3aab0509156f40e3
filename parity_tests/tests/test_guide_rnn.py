"""Recurrent layers: torch's nn.LSTM / nn.GRU against nnx.RNN over nnx.LSTMCell /
nnx.GRUCell, with torch's weights moved across. torch stacks the gates in one matrix
and keeps two biases; NNX has one Linear per gate (LSTM) or per side (GRU), and one
bias. float64, relative 1e-12. The guide's differences table cites these tests."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

F64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)
I, H = 3, 5                                  # input features, hidden size


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def torch_rnn(kind):
    torch.manual_seed(0)
    return getattr(torch.nn, kind)(I, H, batch_first=True, dtype=torch.float64)


def weights(rnn):
    return {k: v.detach().numpy() for k, v in rnn.state_dict().items()}


def sequence():
    return np.random.default_rng(0).standard_normal((2, 7, I))     # (batch, time, features)


def port_lstm(w):
    """torch's stacked (4H, ·) gates i, f, g, o into NNX's eight per-gate Linears."""
    cell = nnx.LSTMCell(I, H, rngs=nnx.Rngs(0), **F64)
    bias = w["bias_ih_l0"] + w["bias_hh_l0"]    # NNX has one bias per gate, on the h side
    for k, gate in enumerate(("i", "f", "g", "o")):
        rows = slice(k * H, (k + 1) * H)
        getattr(cell, "if_" if gate == "f" else f"i{gate}").kernel[...] = jnp.asarray(w["weight_ih_l0"][rows].T)
        hidden = getattr(cell, f"h{gate}")
        hidden.kernel[...] = jnp.asarray(w["weight_hh_l0"][rows].T)
        hidden.bias[...] = jnp.asarray(bias[rows])
    return cell


def test_lstm_gates_split_and_biases_summed():
    lstm = torch_rnn("LSTM")
    x = sequence()
    expected, (h_n, c_n) = lstm(torch.as_tensor(x))
    cell = port_lstm(weights(lstm))
    assert cell.ii.bias is None and cell.hi.bias.shape == (H,)       # input side has no bias
    out = nnx.RNN(cell)(jnp.asarray(x))                               # batch-major, like batch_first
    np.testing.assert_allclose(np.asarray(out), expected.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(out[:, -1]), h_n[0].detach().numpy(), rtol=1e-12, atol=1e-14)
    # Gate order matters: swapping torch's f and g blocks gives a different network.
    w = weights(lstm)
    for key in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        w[key] = np.concatenate([w[key][:H], w[key][2 * H:3 * H], w[key][H:2 * H], w[key][3 * H:]])
    swapped = nnx.RNN(port_lstm(w))(jnp.asarray(x))
    assert np.max(np.abs(np.asarray(swapped) - expected.detach().numpy())) > 1e-2


def port_gru(w):
    """torch's r, z, n blocks map one to one onto NNX's (in, 3H) kernels; b_hn has no slot."""
    cell = nnx.GRUCell(I, H, rngs=nnx.Rngs(0), **F64)
    cell.dense_i.kernel[...] = jnp.asarray(w["weight_ih_l0"].T)     # (I, 3H), r | z | n
    cell.dense_h.kernel[...] = jnp.asarray(w["weight_hh_l0"].T)     # (H, 3H), no bias
    hidden_bias = w["bias_hh_l0"].copy()
    hidden_bias[2 * H:] = 0.0                   # b_hr, b_hz fold into the input bias; b_hn cannot
    cell.dense_i.bias[...] = jnp.asarray(w["bias_ih_l0"] + hidden_bias)
    return cell


def test_gru_bias_hn_has_no_place_in_nnx_grucell():
    gru = torch_rnn("GRU")
    x = sequence()
    # torch: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); NNX: tanh(W_in x + b_in + r * W_hn h).
    assert gru.bias_hh_l0.shape == (3 * H,) and nnx.GRUCell(I, H, rngs=nnx.Rngs(0)).dense_h.bias is None
    cell = port_gru(weights(gru))
    ported = np.asarray(nnx.RNN(cell)(jnp.asarray(x)))
    assert np.max(np.abs(ported - gru(torch.as_tensor(x))[0].detach().numpy())) > 1e-3
    with torch.no_grad():
        gru.bias_hh_l0[2 * H:] = 0.0            # a torch GRU with b_hn = 0 ports exactly
    np.testing.assert_allclose(ported, gru(torch.as_tensor(x))[0].detach().numpy(), rtol=1e-12, atol=1e-14)
