"""The deep examples (cnn, lstm, gru) below the training loop: the digits data and its
split, the shared dropout mask on three implementations, the weights round trip through
the exchange format, cross-entropy, and the eval/train semantics of BatchNorm and
dropout on both backends."""
import numpy as np
import pytest
import torch

import jaxport.training as jt
import torchref.training as tt
from jaxport.numerics import dtype_scope
from portcore import digits, dropout_hash, registry, weights

DEEP = ("cnn", "lstm", "gru")


def test_digits_split_is_stratified_fixed_and_disjoint():
    pixels, labels = digits.load_digits()
    assert pixels.shape == (1797, 64) and pixels.min() == 0.0 and pixels.max() == 1.0
    assert np.array_equal(pixels * 16, np.round(pixels * 16))         # grey levels 0..16, exact
    train, test = digits.split(0)
    assert len(train) == 1437 and len(test) == 360
    assert not set(train) & set(test) and len(set(train) | set(test)) == 1797
    # every class's held-out share is its share of the data, to within one image
    counts, held = np.bincount(labels, minlength=10), np.bincount(labels[test], minlength=10)
    assert np.all(np.abs(held - counts * 360 / 1797) < 1)
    again = digits.stratified_split(labels, 360, np.random.default_rng([0, 3]))
    assert all(np.array_equal(a, b) for a, b in zip(again, (train, test)))
    assert not np.array_equal(digits.split(1)[1], test)               # the seed moves it
    x, y = digits.make_digits(shape=(1, 8, 8))
    assert x.shape == (1437, 1, 8, 8) and y.dtype == np.int64 and set(y) == set(range(10))


def _torch_mask(key, step, samples, units, rate):
    from torchref.shared_dropout import SharedDropout
    layer = SharedDropout(rate, key=key)
    layer.step.fill_(step)
    return (layer(torch.ones(samples, units, dtype=torch.float64)) != 0).numpy()


def _jax_mask(key, step, samples, units, rate):
    import jax.numpy as jnp
    from jaxport.deep_layers import SharedDropout
    layer = SharedDropout(rate, key=key)
    layer.step[...] = jnp.uint32(step)
    return np.asarray(layer(jnp.ones((samples, units))) != 0)


@pytest.mark.parametrize("key,step", [(0, 0), (0, 459), (7, 2 ** 32 - 1), (2 ** 32 - 1, 12345)])
def test_dropout_masks_are_the_same_in_numpy_torch_and_jax(key, step):
    spec = dropout_hash.keep_mask(key, step, 64, np.arange(128), 0.25)
    assert np.array_equal(_torch_mask(key, step, 64, 128, 0.25), spec)
    assert np.array_equal(_jax_mask(key, step, 64, 128, 0.25), spec)
    # P(keep) = 0.75: 8192 Bernoulli draws have a standard deviation of 0.0048
    assert abs(spec.mean() - 0.75) < 4 * np.sqrt(0.75 * 0.25 / spec.size)
    other = dropout_hash.keep_mask(key, step + 1, 64, np.arange(128), 0.25)
    assert abs((spec == other).mean() - (0.75 ** 2 + 0.25 ** 2)) < 0.03   # steps independent


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("example", DEEP)
def test_weights_round_trip_is_bit_identical(example, dtype, tmp_path):
    """torch's default init -> file -> jaxport -> file: the same bits, every entry; and
    the entries are the state_dict less num_batches_tracked."""
    params = tt.default_params(example, 0, dtype=dtype)
    model = tt.build_model(example, dtype=dtype)
    assert set(params) == {n for n in model.state_dict() if not n.endswith("num_batches_tracked")}
    for suffix in (".npz", ".safetensors"):
        path = tmp_path / f"w{suffix}"
        weights.save(path, params)
        with dtype_scope(dtype):
            back = jt.build_model(example, weights.load(path), dtype=dtype)
        from flax import nnx
        from jaxport.convert import to_numpy
        out = to_numpy(nnx.state(back), example)
        assert out.keys() == params.keys()
        for name, value in params.items():
            assert out[name].dtype == value.dtype and out[name].tobytes() == value.tobytes(), name
    # and jaxport's own init goes through torch unchanged
    own = jt.default_params(example, 3, dtype=dtype)
    from torchref.convert import to_numpy as torch_numpy
    back = torch_numpy(tt.build_model(example, own, dtype=dtype), example)
    assert all(back[n].tobytes() == own[n].tobytes() for n in own)


def test_cross_entropy_agrees_in_float64():
    import jax.numpy as jnp
    from jaxport.losses import cross_entropy
    rng = np.random.default_rng(5)
    logits, labels = rng.normal(0, 3, (64, 10)), rng.integers(0, 10, 64)
    t = torch.nn.CrossEntropyLoss()(torch.as_tensor(logits), torch.as_tensor(labels)).item()
    with dtype_scope("float64"):
        j = float(cross_entropy(jnp.asarray(logits), jnp.asarray(labels, jnp.int32)))
        # weights 0 on padding rows leave the mean over the real rows
        w = np.r_[np.ones(29), np.zeros(35)][:, None]
        jw = float(cross_entropy(jnp.asarray(logits), jnp.asarray(labels, jnp.int32), jnp.asarray(w)))
    tw = torch.nn.CrossEntropyLoss()(torch.as_tensor(logits[:29]), torch.as_tensor(labels[:29])).item()
    # a mean of 64 log-sum-exps of size ~3: a few float64 roundings of the result
    assert abs(j - t) <= 4 * np.finfo(np.float64).eps * abs(t)
    assert abs(jw - tw) <= 4 * np.finfo(np.float64).eps * abs(tw)


@pytest.mark.parametrize("example", DEEP)
def test_eval_mode_is_deterministic_and_leaves_state_alone(example):
    """predict (eval mode) twice gives the same logits and changes no state; a training
    forward (loss_and_grads) does not touch the caller's arrays either."""
    x = registry.get(example).held_out(0)[0][:50]
    p = registry.shared_init(example)
    snapshot = {k: v.copy() for k, v in p.items()}
    for backend in (tt, jt):
        a, b = backend.predict(example, p, x, dtype="float64"), backend.predict(example, p, x, dtype="float64")
        assert np.array_equal(a, b) and a.shape == (50, 10)
    assert all(np.array_equal(p[k], snapshot[k]) for k in p)


def test_cnn_training_mode_uses_batch_statistics_and_dropout():
    """The same weights give different logits in training mode (batch statistics, 1/4
    of fc's inputs dropped) and in eval mode; after a step the running statistics move by
    torch's rule: 0.9 old + 0.1 batch mean, and 0.1 x the UNBIASED batch variance."""
    ex, cfg = "cnn", registry.get("cnn").defaults
    x, y = registry.make_data("cnn")
    p = registry.shared_init(ex)
    _, _, after, _ = jt.train_step(ex, p, None, x[:64], y[:64], cfg, dtype="float64")
    model = tt.build_model(ex, p, dtype="float64")
    with torch.no_grad():
        h = model.conv2(model.pool(torch.relu(model.conv1(torch.as_tensor(x[:64])))))   # (64, 32, 4, 4)
    mean, var = h.mean((0, 2, 3)).numpy(), h.var((0, 2, 3), unbiased=True).numpy()
    np.testing.assert_allclose(after["bn.running_mean"], 0.1 * mean, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(after["bn.running_var"], 0.9 + 0.1 * var, rtol=1e-12)
    assert after["drop.step"] == 1.0
