"""Layer kinds: each torch <-> Flax NNX rule round-trips bit for bit, and computes what
torch computes (float64, the same input through torch's layer and the NNX layer
holding the converted arrays). The forward check is what catches a rule that keeps the
shapes and moves the entries: a square conv kernel transposed with `.T`."""
import numpy as np
import pytest
import torch
from flax import nnx
from jax import numpy as jnp

from portcore import convert
from portcore.conv_kinds import Conv2d
from portcore.kinds import BatchNorm, Embedding, LayerNorm, Linear, Parameter
from portcore.recurrent_kinds import GRU, LSTM
from jaxport.numerics import dtype_scope

KINDS = [Linear(5, 3), Linear(8, 4, input_chw=(2, 2, 2)), Conv2d(3, 4, 3, padding=1), BatchNorm(4),
         LayerNorm(6), Embedding(7, 3), LSTM(5, 4), LSTM(5, 4, flax_input_bias=True), GRU(5, 4)]
# Tight enough for float64 sums of a few dozen terms: measured differences are <= 1e-15.
RTOL, ATOL = 1e-12, 1e-13


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS, ids=repr)
def test_round_trip_is_bit_exact(kind, dtype):
    rng = np.random.default_rng(0)
    shapes = {**kind.param_shapes(), **kind.buffer_shapes()}
    arrays = {n: rng.standard_normal(s).astype(dtype) for n, s in shapes.items()}
    if isinstance(kind, LSTM) and not kind.flax_input_bias:
        arrays["bias_hh"] = arrays["bias_hh_l0"]
        arrays["bias_hh_l0"] = np.zeros_like(arrays["bias_hh_l0"])   # the summed form's fixed point
        del arrays["bias_hh"]
    back = kind.from_flax(kind.to_flax(arrays))
    assert back.keys() == arrays.keys()
    for name, value in arrays.items():
        assert back[name].dtype == value.dtype and back[name].tobytes() == value.tobytes(), name


def test_summed_lstm_biases_keep_the_function_not_the_file():
    kind, rng = LSTM(3, 2), np.random.default_rng(1)
    arrays = {n: rng.standard_normal(s) for n, s in kind.param_shapes().items()}
    back = kind.from_flax(kind.to_flax(arrays))
    np.testing.assert_array_equal(back["bias_ih_l0"], arrays["bias_ih_l0"] + arrays["bias_hh_l0"])
    assert not back["bias_hh_l0"].any()


def _torch_and_nnx(kind, rngs):
    """torch's layer and the NNX layer that the rule maps it onto."""
    if isinstance(kind, Linear):
        return torch.nn.Linear(kind.in_features, kind.out_features), \
            nnx.Linear(kind.in_features, kind.out_features, param_dtype=jnp.float64, rngs=rngs)
    if isinstance(kind, Conv2d):
        return torch.nn.Conv2d(kind.in_channels, kind.out_channels, kind.kernel_size, padding=kind.padding), \
            nnx.Conv(kind.in_channels, kind.out_channels, (kind.kernel_size,) * 2, padding=kind.padding,
                     param_dtype=jnp.float64, rngs=rngs)
    if isinstance(kind, BatchNorm):
        return torch.nn.BatchNorm2d(kind.num_features), \
            nnx.BatchNorm(kind.num_features, use_running_average=True, param_dtype=jnp.float64, rngs=rngs)
    if isinstance(kind, LayerNorm):
        return torch.nn.LayerNorm(kind.normalized_shape), \
            nnx.LayerNorm(kind.normalized_shape, epsilon=kind.eps, param_dtype=jnp.float64, rngs=rngs)
    if isinstance(kind, Embedding):
        return torch.nn.Embedding(kind.num_embeddings, kind.embedding_dim), \
            nnx.Embed(kind.num_embeddings, kind.embedding_dim, param_dtype=jnp.float64, rngs=rngs)
    if isinstance(kind, LSTM):
        cell = nnx.LSTMCell(kind.input_size, kind.hidden_size, param_dtype=jnp.float64, rngs=rngs)
        if kind.flax_input_bias:
            for gate in ("ii", "if_", "ig", "io"):
                setattr(cell, gate, nnx.Linear(kind.input_size, kind.hidden_size, param_dtype=jnp.float64, rngs=rngs))
        return torch.nn.LSTM(kind.input_size, kind.hidden_size, batch_first=True), nnx.RNN(cell)
    cell = nnx.GRUCell(kind.input_size, kind.hidden_size, param_dtype=jnp.float64, rngs=rngs)
    cell.dense_h = nnx.Linear(kind.hidden_size, 3 * kind.hidden_size, param_dtype=jnp.float64, rngs=rngs)
    return torch.nn.GRU(kind.input_size, kind.hidden_size, batch_first=True), nnx.RNN(cell)


def _input(kind, rng):
    """A torch-layout input, and the same data in the NNX layer's layout."""
    if isinstance(kind, Conv2d):
        x = rng.standard_normal((2, kind.in_channels, 5, 5))
        return x, x.transpose(0, 2, 3, 1)                       # NCHW -> NHWC
    if isinstance(kind, BatchNorm):
        x = rng.standard_normal((2, kind.num_features, 3, 3))
        return x, x.transpose(0, 2, 3, 1)
    if isinstance(kind, Linear) and kind.input_chw:
        maps = rng.standard_normal((2, *kind.input_chw))         # conv maps (N, C, H, W)
        return maps.reshape(2, -1), maps.transpose(0, 2, 3, 1).reshape(2, -1)   # each side's flatten
    if isinstance(kind, Embedding):
        ids = rng.integers(0, kind.num_embeddings, size=(2, 4))
        return ids, ids
    if isinstance(kind, (LSTM, GRU)):
        x = rng.standard_normal((2, 6, kind.input_size))
        return x, x
    x = rng.standard_normal((2, getattr(kind, "in_features", getattr(kind, "normalized_shape", 0))))
    return x, x


def _outputs(kind, tmod, nmod, arrays, x_torch, x_nnx):
    pure = nnx.to_pure_dict(nnx.state(nmod, (nnx.Param, nnx.BatchStat)))
    for path, value in kind.to_flax(arrays).items():
        node = pure
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = jnp.asarray(value)
    nnx.update(nmod, _with(nnx.state(nmod, (nnx.Param, nnx.BatchStat)), pure))
    with torch.no_grad():
        tmod.eval()
        tx = torch.as_tensor(x_torch) if isinstance(kind, Embedding) else torch.as_tensor(x_torch, dtype=torch.float64)
        out = tmod(tx)
        out = out[0] if isinstance(out, tuple) else out
        out = out.numpy()
    got = np.asarray(nmod(jnp.asarray(x_nnx)))
    if out.ndim == 4:
        out = out.transpose(0, 2, 3, 1)
    return out, got


def _with(state, pure):
    nnx.replace_by_pure_dict(state, pure)
    return state


@pytest.mark.parametrize("kind", KINDS, ids=repr)
def test_the_rule_computes_what_torch_computes(kind):
    with dtype_scope("float64"):
        torch.manual_seed(0)
        rng = np.random.default_rng(2)
        tmod, nmod = _torch_and_nnx(kind, nnx.Rngs(0))
        tmod = tmod.double()
        if isinstance(kind, Linear) and kind.input_chw:
            tmod, nmod = torch.nn.Linear(8, 4).double(), nnx.Linear(8, 4, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        arrays = {n: rng.standard_normal(s) for n, s in {**kind.param_shapes(), **kind.buffer_shapes()}.items()}
        if isinstance(kind, BatchNorm):
            arrays["running_var"] = rng.uniform(0.5, 2.0, kind.num_features)
        with torch.no_grad():
            for name, t in {**dict(tmod.named_parameters()), **dict(tmod.named_buffers())}.items():
                if name in arrays:
                    t.copy_(torch.as_tensor(arrays[name]))
        expected, got = _outputs(kind, tmod, nmod, arrays, *_input(kind, rng))
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_a_square_kernel_transposed_with_dot_T_keeps_its_shape_and_is_caught():
    kind = Conv2d(3, 3, 3, padding=1)                 # square kernel, as many channels in as out
    with dtype_scope("float64"):
        rng = np.random.default_rng(3)
        tmod, nmod = _torch_and_nnx(kind, nnx.Rngs(0))
        tmod = tmod.double()
        arrays = {n: rng.standard_normal(s) for n, s in kind.param_shapes().items()}
        with torch.no_grad():
            tmod.weight.copy_(torch.as_tensor(arrays["weight"]))
            tmod.bias.copy_(torch.as_tensor(arrays["bias"]))
        wrong = Conv2d(3, 3, 3, padding=1)
        object.__setattr__(wrong, "to_flax", lambda a: {("kernel",): a["weight"].T, ("bias",): a["bias"]})
        assert wrong.to_flax(arrays)[("kernel",)].shape == kind.to_flax(arrays)[("kernel",)].shape
        expected, got = _outputs(wrong, tmod, nmod, arrays, *_input(kind, rng))
        assert np.abs(got - expected).max() > 0.1          # O(1) entries: the wrong rule is far off


def test_the_model_converter_places_layers_under_their_paths():
    layers = {"hidden_1": Linear(1, 2), "blocks.0": LayerNorm(2)}
    arrays = convert.torch_init(layers, np.random.default_rng(0))
    flax = convert.to_flax(layers, arrays)
    assert set(flax) == {("hidden_1", "kernel"), ("hidden_1", "bias"), ("blocks", 0, "scale"), ("blocks", 0, "bias")}
    seq = convert.to_flax(layers, arrays, flax_paths={"hidden_1": ("layers", 0)})
    assert ("layers", 0, "kernel") in seq
    back = convert.from_flax(layers, seq, flax_paths={"hidden_1": ("layers", 0)})
    assert all(back[n].tobytes() == arrays[n].tobytes() for n in arrays)


def test_of_torch_reads_the_kind_of_each_layer():
    assert convert.of_torch(torch.nn.Conv2d(1, 16, 3, padding=1)) == Conv2d(1, 16, 3, 1, 1)
    assert convert.of_torch(torch.nn.LSTM(8, 64, batch_first=True)) == LSTM(8, 64)
    assert convert.of_torch(torch.nn.BatchNorm2d(32)) == BatchNorm(32, 1e-5, 0.1)
    with pytest.raises(ValueError, match="no layer kind"):
        convert.of_torch(torch.nn.Transformer())


def test_a_bare_parameter_is_a_layer_of_its_own_at_its_full_name():
    """A learned position table at the root ("pos") or in a module of the user's own
    ("enc.cls"): the Parameter kind, relative name "", one to one; the root's own path
    is "" and ()."""
    kind = convert.of_torch(torch.nn.Parameter(torch.zeros(1, 4, 3)))
    assert kind == Parameter((1, 4, 3)) and kind.param_shapes() == {"": (1, 4, 3)}
    layers = {"pos": kind, "enc.cls": Parameter((3,)), "": Linear(3, 2)}
    arrays = {"pos": np.arange(12.0).reshape(1, 4, 3), "enc.cls": np.ones(3), "weight": np.ones((2, 3)),
              "bias": np.zeros(2)}
    assert convert.param_shapes(layers) == {n: a.shape for n, a in arrays.items()}
    flax = convert.to_flax(layers, arrays)
    assert set(flax) == {("pos",), ("enc", "cls"), ("kernel",), ("bias",)}
    back = convert.from_flax(layers, flax)
    assert back.keys() == arrays.keys() and all(back[n].tobytes() == arrays[n].tobytes() for n in arrays)
    with pytest.raises(ValueError, match="no torch default init"):
        convert.torch_init(layers, np.random.default_rng(0))
