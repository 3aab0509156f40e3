"""Layers beyond the tutorial's Linear, where PyTorch and Flax NNX differ in layout or in
their defaults: convolution, pooling, flattening, batch norm, layer norm, GELU, dropout
and cross-entropy. Each test ports one torch layer to NNX and compares numbers in
float64 (relative 1e-12 unless stated), so the guide's "what to change" is proved.
The guide's differences table cites these tests; the recurrent layers are in
test_guide_rnn.py."""
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

F64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)


@pytest.fixture(autouse=True)
def x64():
    """float64 in JAX for each test here, without touching the rest of the session."""
    with jax.enable_x64(True):
        yield


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def torch_conv(padding=1, stride=1):
    torch.manual_seed(0)
    return torch.nn.Conv2d(3, 4, 3, padding=padding, stride=stride, dtype=torch.float64)


def test_conv2d_nchw_oihw_vs_nhwc_hwio():
    conv = torch_conv()
    x = rand(2, 3, 8, 8)                                             # NCHW
    expected = conv(torch.as_tensor(x)).detach().numpy()             # (2, 4, 8, 8)
    w = conv.weight.detach().numpy()                                 # (O, I, H, W) = (4, 3, 3, 3)
    jconv = nnx.Conv(3, 4, (3, 3), padding=((1, 1), (1, 1)), rngs=nnx.Rngs(0), **F64)
    jconv.kernel[...] = jnp.asarray(w.transpose(2, 3, 1, 0))          # (H, W, I, O)
    jconv.bias[...] = jnp.asarray(conv.bias.detach().numpy())
    nhwc = jconv(jnp.asarray(x.transpose(0, 2, 3, 1)))               # NHWC in, NHWC out
    np.testing.assert_allclose(np.asarray(nhwc).transpose(0, 3, 1, 2), expected, rtol=1e-12, atol=1e-14)
    # .T reverses all four axes: (W, H, I, O). For a square kernel that is HWIO's shape,
    # so nothing complains, but H and W are swapped: a different convolution.
    assert w.T.shape == jconv.kernel.shape
    jconv.kernel[...] = jnp.asarray(w.T)
    wrong = np.asarray(jconv(jnp.asarray(x.transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2)
    assert np.max(np.abs(wrong - expected)) > 0.1


def test_same_padding_is_not_torch_padding_with_stride_2():
    conv = torch_conv(padding=1, stride=2)
    x = rand(1, 3, 8, 8)
    expected = conv(torch.as_tensor(x)).detach().numpy()             # (1, 4, 4, 4)
    out = {}
    for padding in ("SAME", ((1, 1), (1, 1))):
        jconv = nnx.Conv(3, 4, (3, 3), strides=2, padding=padding, rngs=nnx.Rngs(0), **F64)
        jconv.kernel[...] = jnp.asarray(conv.weight.detach().numpy().transpose(2, 3, 1, 0))
        jconv.bias[...] = jnp.asarray(conv.bias.detach().numpy())
        out[str(padding)] = np.asarray(jconv(jnp.asarray(x.transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2)
    # Same output shape, but 'SAME' pads (0, 1) here (the odd pixel goes at the end),
    # torch's padding=1 pads (1, 1): every output pixel sees a shifted window.
    assert out["SAME"].shape == expected.shape and np.max(np.abs(out["SAME"] - expected)) > 0.1
    np.testing.assert_allclose(out[str(((1, 1), (1, 1)))], expected, rtol=1e-12, atol=1e-14)


def test_max_pool_stride_defaults_to_1_in_flax_to_the_window_in_torch():
    x = rand(1, 2, 8, 8)
    expected = torch.nn.MaxPool2d(2)(torch.as_tensor(x)).numpy()     # stride = kernel: (1, 2, 4, 4)
    nhwc = jnp.asarray(x.transpose(0, 2, 3, 1))
    assert nnx.max_pool(nhwc, (2, 2)).shape == (1, 7, 7, 2)          # strides default to 1
    pooled = nnx.max_pool(nhwc, (2, 2), strides=(2, 2))
    np.testing.assert_array_equal(np.asarray(pooled).transpose(0, 3, 1, 2), expected)


def test_flatten_after_conv_is_chw_in_torch_hwc_in_nnx():
    features = rand(2, 4, 3, 3)                                       # NCHW, as after a conv
    torch.manual_seed(0)
    fc = torch.nn.Linear(4 * 3 * 3, 5, dtype=torch.float64)
    expected = fc(torch.as_tensor(features).flatten(1)).detach().numpy()
    w = fc.weight.detach().numpy()                                   # (5, C·H·W), columns in C, H, W order
    jfc = nnx.Linear(36, 5, rngs=nnx.Rngs(0), **F64)
    jfc.bias[...] = jnp.asarray(fc.bias.detach().numpy())
    flat = jnp.asarray(features.transpose(0, 2, 3, 1)).reshape(2, -1)  # NHWC flattened: H, W, C order
    jfc.kernel[...] = jnp.asarray(w.T)                                # the Linear rule alone is not enough
    assert np.max(np.abs(np.asarray(jfc(flat)) - expected)) > 0.1
    # Permute the kernel's rows from (C, H, W) to (H, W, C) order.
    jfc.kernel[...] = jnp.asarray(w.T.reshape(4, 3, 3, 5).transpose(1, 2, 0, 3).reshape(36, 5))
    np.testing.assert_allclose(np.asarray(jfc(flat)), expected, rtol=1e-12, atol=1e-14)


# Flax writes the float64 batch statistics into its float32 running stats, and JAX warns
# about that cast; the float32 stats are the point of the test, not the warning.
@pytest.mark.filterwarnings("ignore:scatter inputs have incompatible types:FutureWarning")
def test_batchnorm_momentum_and_running_variance():
    x = rand(8, 3, 2, 2) * 2 + 1                                     # NCHW; 32 values per channel
    bn = torch.nn.BatchNorm2d(3, dtype=torch.float64)                # momentum 0.1, eps 1e-5
    assert (bn.momentum, bn.eps, nnx.BatchNorm(3, rngs=nnx.Rngs(0)).momentum) == (0.1, 1e-5, 0.99)
    out = bn(torch.as_tensor(x)).detach().numpy()                    # train mode: one batch
    jbn = nnx.BatchNorm(3, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0), **F64)  # torch's 0.1 is Flax's 1 - 0.9
    jout = jbn(jnp.asarray(x.transpose(0, 2, 3, 1)))                 # channels last
    np.testing.assert_allclose(np.asarray(jout).transpose(0, 3, 1, 2), out, rtol=1e-12, atol=1e-14)
    # Flax keeps the running stats in float32 whatever param_dtype says (torch: the
    # module's dtype), so they compare at float32's resolution.
    assert jbn.mean[...].dtype == jnp.float32 and bn.running_mean.dtype == torch.float64
    np.testing.assert_allclose(np.asarray(jbn.mean[...]), bn.running_mean.numpy(), rtol=1e-6)
    # Both normalise with the biased batch variance, but torch's running_var takes the
    # unbiased one (n/(n-1)), Flax's the biased one: the running stats part ways.
    biased = x.transpose(1, 0, 2, 3).reshape(3, -1).var(axis=1)
    np.testing.assert_allclose(np.asarray(jbn.var[...]), 0.9 + 0.1 * biased, rtol=1e-6)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * biased * 32 / 31, rtol=1e-12)
    # eval() in torch, use_running_average in NNX (model.eval() sets it for every layer).
    bn.eval()
    jbn.eval()
    assert jbn.use_running_average
    gap = np.asarray(jbn(jnp.asarray(x.transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2) - bn(torch.as_tensor(x)).detach().numpy()
    assert 1e-4 < np.max(np.abs(gap)) < 1e-1


def test_layernorm_epsilon_is_1e_6_in_flax_1e_5_in_torch():
    assert torch.nn.LayerNorm(4).eps == 1e-5 and nnx.LayerNorm(4, rngs=nnx.Rngs(0)).epsilon == 1e-6
    x = 1e-3 * rand(3, 4)                                             # small variance: eps shows
    expected = torch.nn.LayerNorm(4, dtype=torch.float64)(torch.as_tensor(x)).detach().numpy()
    default = nnx.LayerNorm(4, rngs=nnx.Rngs(0), **F64)(jnp.asarray(x))
    assert np.max(np.abs(np.asarray(default) - expected)) > 1e-3
    matched = nnx.LayerNorm(4, epsilon=1e-5, rngs=nnx.Rngs(0), **F64)(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(matched), expected, rtol=1e-12, atol=1e-14)


def test_gelu_is_tanh_approximate_in_jax_exact_in_torch():
    x = np.linspace(-4, 4, 81)
    exact = torch.nn.functional.gelu(torch.as_tensor(x)).numpy()
    tanh = torch.nn.functional.gelu(torch.as_tensor(x), approximate="tanh").numpy()
    assert inspect.signature(jax.nn.gelu).parameters["approximate"].default is True
    np.testing.assert_allclose(np.asarray(jax.nn.gelu(jnp.asarray(x))), tanh, rtol=1e-12, atol=1e-15)
    assert np.max(np.abs(np.asarray(jax.nn.gelu(jnp.asarray(x))) - exact)) > 1e-4
    np.testing.assert_allclose(np.asarray(jax.nn.gelu(jnp.asarray(x), approximate=False)), exact,
                               rtol=1e-12, atol=1e-15)


def test_dropout_train_and_eval_modes():
    x = np.ones((1000,))
    drop = torch.nn.Dropout(0.25)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        kept = drop(torch.as_tensor(x)).numpy()                      # a fresh module is in train mode
    assert set(np.unique(kept)) == {0.0, 4 / 3}                      # survivors scaled by 1/(1 - p)
    drop.eval()
    assert np.array_equal(drop(torch.as_tensor(x)).numpy(), x)
    jdrop = nnx.Dropout(0.25, rngs=nnx.Rngs(dropout=0))              # its own named stream
    jkept = np.asarray(jdrop(jnp.asarray(x)))
    assert set(np.unique(jkept)) == {0.0, 4 / 3} and 150 < np.sum(jkept == 0) < 350
    jdrop.eval()                                                     # sets deterministic=True
    assert np.array_equal(np.asarray(jdrop(jnp.asarray(x))), x)
    jdrop.train()
    assert not np.array_equal(np.asarray(jdrop(jnp.asarray(x))), x)


def test_cross_entropy_takes_integer_labels_and_does_not_reduce():
    logits, labels = rand(5, 10), np.array([3, 0, 9, 3, 1])
    expected = torch.nn.CrossEntropyLoss()(torch.as_tensor(logits), torch.as_tensor(labels)).item()
    per_example = optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(logits), jnp.asarray(labels))
    assert per_example.shape == (5,)                                 # no reduction: take .mean()
    assert float(per_example.mean()) == pytest.approx(expected, rel=1e-14)
