"""The claims docs/guide.md makes about how PyTorch and JAX differ, each checked on real
numbers. The guide's differences table cites these tests by name (test_docs.py checks
that every citation exists), and some are shown in the guide as they are."""
import inspect
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx
from torch.utils.data import DataLoader, TensorDataset

from jaxport import losses
from jaxport import training as jax_training
from jaxport.programs import batch_indices
from jaxport.layers import torch_linear
from torchref import training as torch_training


@pytest.fixture
def x64():
    """float64 in JAX for one test, without touching the rest of the session."""
    with jax.enable_x64(True):
        yield


def test_torch_mutates_parameters_nnx_state_is_a_pytree(x64):
    # torch: the optimizer writes into the very Parameter objects the module holds.
    model = torch.nn.Linear(1, 1, dtype=torch.float64)
    weight = model.weight
    before = weight.detach().clone()
    model(torch.ones(1, 1, dtype=torch.float64)).sum().backward()
    torch.optim.SGD(model.parameters(), lr=0.5).step()
    assert model.weight is weight and weight.item() == before.item() - 0.5    # d(w·1 + b)/dw = 1
    # NNX: split gives a pytree of arrays; a new state is a new value, the model is untouched.
    jmodel = nnx.Linear(1, 1, rngs=nnx.Rngs(0), dtype=jnp.float64, param_dtype=jnp.float64)
    graphdef, state = nnx.split(jmodel)
    assert sorted(leaf.shape for leaf in jax.tree.leaves(state)) == [(1,), (1, 1)]
    shifted = jax.tree.map(lambda p: p - 1.0, state)        # kernel - 1, bias - 1
    x = jnp.array([[2.0]])
    assert float(nnx.merge(graphdef, shifted)(x)[0, 0]) == pytest.approx(float(jmodel(x)[0, 0]) - 2.0 - 1.0)
    assert float(nnx.merge(graphdef, state)(x)[0, 0]) == float(jmodel(x)[0, 0])   # state unchanged


def test_backward_accumulates_jax_grad_is_a_function():
    # f(w) = w**3 at w = 2: value 8, derivative 3·w**2 = 12.
    w = torch.tensor(2.0, requires_grad=True)
    (w ** 3).backward()
    assert w.grad.item() == 12.0
    (w ** 3).backward()                      # no zero_grad: .grad accumulates
    assert w.grad.item() == 24.0
    f = lambda w: w ** 3
    assert float(jax.grad(f)(2.0)) == 12.0 and float(jax.grad(f)(2.0)) == 12.0   # no state
    value, grad = jax.value_and_grad(f)(2.0)
    assert (float(value), float(grad)) == (8.0, 12.0)


def quadratic(p, c):
    """A loss whose gradient depends on the parameters, the same code for both libraries."""
    return ((p - 1.0) ** 2 * c).sum()


def torch_steps(optimizer_class, steps=3, **kw):
    p = torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    c = torch.tensor([1.0, 0.1, 10.0], dtype=torch.float64)
    opt = optimizer_class([p], **kw)
    for _ in range(steps):
        opt.zero_grad()
        quadratic(p, c).backward()
        opt.step()
    return p.detach().numpy()


def optax_steps(tx, steps=3):
    p = jnp.array([0.5, -2.0, 3.0])
    c = jnp.array([1.0, 0.1, 10.0])
    opt_state = tx.init(p)
    for _ in range(steps):
        grads = jax.grad(quadratic)(p, c)
        updates, opt_state = tx.update(grads, opt_state, p)   # params are needed for decay
        p = optax.apply_updates(p, updates)
    return np.asarray(p)


def test_optimizer_step_zero_grad_step_vs_update_apply_updates(x64):
    # One SGD step is p - lr·grad on both sides: grad = 2(p - 1)c.
    expected = np.array([0.5, -2.0, 3.0]) - 0.1 * 2 * (np.array([0.5, -2.0, 3.0]) - 1) * np.array([1.0, 0.1, 10.0])
    np.testing.assert_allclose(torch_steps(torch.optim.SGD, steps=1, lr=0.1), expected, rtol=1e-15)
    np.testing.assert_allclose(optax_steps(optax.sgd(0.1), steps=1), expected, rtol=1e-15)
    # Adam: eps outside the square root on both sides. optax's eps_root already defaults
    # to 0.0, so in float64 plain optax.adam(lr) is torch's Adam(lr). (In float32 without x64
    # its bias corrections are float32: test_free_run_criterion.py, jaxport/optim.py.)
    assert inspect.signature(optax.adam).parameters["eps_root"].default == 0.0
    np.testing.assert_allclose(optax_steps(optax.adam(0.01)), torch_steps(torch.optim.Adam, lr=0.01), rtol=1e-13)


def test_adam_weight_decay_is_l2_unless_decoupled(x64):
    torch_adam_l2 = torch_steps(torch.optim.Adam, lr=0.01, weight_decay=0.1)
    # torch's Adam(weight_decay) adds decay·p to the gradient before the moments ...
    l2 = optax.chain(optax.add_decayed_weights(0.1), optax.adam(0.01))
    np.testing.assert_allclose(optax_steps(l2), torch_adam_l2, rtol=1e-13)
    # ... which is not optax.adamw (decoupled: decay·p added after the moments) ...
    adamw = optax_steps(optax.adamw(0.01, weight_decay=0.1))
    assert np.max(np.abs(adamw - torch_adam_l2)) > 1e-4
    # ... which is torch's AdamW, when both are given the same decay.
    np.testing.assert_allclose(adamw, torch_steps(torch.optim.AdamW, lr=0.01, weight_decay=0.1), rtol=1e-13)
    # torch's Adam has a switch for it too: decoupled_weight_decay=True is AdamW.
    decoupled = torch_steps(torch.optim.Adam, lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)
    np.testing.assert_allclose(decoupled, adamw, rtol=1e-13)
    # The defaults differ by 100x: torch AdamW 1e-2, optax.adamw 1e-4.
    torch_default = torch.optim.AdamW([torch.zeros(1)]).defaults["weight_decay"]
    assert (torch_default, inspect.signature(optax.adamw).parameters["weight_decay"].default) == (1e-2, 1e-4)


def test_randomness_global_seed_vs_explicit_keys():
    with torch.random.fork_rng():            # leave the session's global generator alone
        torch.manual_seed(0)
        a, b = torch.rand(3), torch.rand(3)  # hidden state advances between calls
        torch.manual_seed(0)
        assert not torch.equal(a, b) and torch.equal(torch.rand(3), a)
    key = jax.random.key(0)
    assert jnp.array_equal(jax.random.uniform(key, (3,)), jax.random.uniform(key, (3,)))  # same key, same draw
    k1, k2 = jax.random.split(key)
    assert not jnp.array_equal(jax.random.uniform(k1, (3,)), jax.random.uniform(k2, (3,)))
    # Models: nnx.Rngs(seed) is explicit, so the same seed rebuilds the same weights.
    p0, p0_again, p1 = (jax_training.default_params("neural_network", seed) for seed in (0, 0, 1))
    assert all(np.array_equal(p0[k], p0_again[k]) for k in p0)
    assert not np.array_equal(p0["hidden_2.weight"], p1["hidden_2.weight"])
    # The same seed is not the same numbers across libraries: parity loads shared weights.
    t0 = torch_training.default_params("neural_network", 0)
    assert not np.allclose(t0["hidden_2.weight"], p0["hidden_2.weight"])


def test_jit_runs_python_at_trace_time_and_recompiles_on_new_shapes():
    traces = []

    def times8(x):
        traces.append(x.shape)               # Python side effect: runs while tracing only
        for _ in range(3):                   # a Python loop is unrolled into the program
            x = x * 2.0
        return x

    f = jax.jit(times8)
    assert f(jnp.ones(3)).tolist() == [8.0] * 3 and f(jnp.zeros(3)).tolist() == [0.0] * 3
    assert traces == [(3,)]                  # new values, same shape and dtype: cached
    f(jnp.ones(4))
    f(jnp.ones(3, jnp.int32))
    assert traces == [(3,), (4,), (3,)]      # a new shape or dtype traces and compiles again
    jaxpr = jax.make_jaxpr(times8)(jnp.ones(3))      # the traced program
    assert [e.primitive.name for e in jaxpr.eqns] == ["mul"] * 3   # no loop left

    @jax.jit
    def flip_if_negative(x):
        return x if x.sum() > 0 else -x      # Python `if` on a traced value: no value yet
    with pytest.raises(jax.errors.TracerBoolConversionError):
        flip_if_negative(jnp.ones(3))
    # lax.cond (or jnp.where) puts both branches into the program.
    flip = jax.jit(lambda x: jax.lax.cond(x.sum() > 0, lambda v: v, lambda v: -v, x))
    assert flip(-jnp.ones(3)).tolist() == [1.0] * 3

    @partial(jax.jit, static_argnames="steps")
    def scale(x, steps):
        traces.append(steps)                 # a static argument is a Python value at trace time ...
        return x * steps
    traces.clear()
    scale(jnp.ones(1), steps=2), scale(jnp.ones(1), steps=2), scale(jnp.ones(1), steps=5)
    assert traces == [2, 5]                  # ... and part of the cache key: 5 compiles again


def test_at_set_returns_a_new_array_torch_writes_in_place():
    t = torch.zeros(3)
    view = t[1:]
    view[0] = 5.0                            # in place, through a view: t changes too
    assert t.tolist() == [0.0, 5.0, 0.0]
    a = jnp.zeros(3)
    with pytest.raises(TypeError):
        a[1] = 5.0                           # jax.Arrays are immutable
    b = a.at[1].set(5.0)
    assert a.tolist() == [0.0, 0.0, 0.0] and b.tolist() == [0.0, 5.0, 0.0]
    assert a.at[1].add(2.0).tolist() == [0.0, 2.0, 0.0]


def test_float64_without_x64_warns_if_asked_truncates_silently_if_implied():
    from jaxport.numerics import jax_dtype
    x = np.array([0.1, 0.2])                 # numpy's default: float64
    with jax.enable_x64(False):
        with warnings.catch_warnings():
            warnings.simplefilter("error")   # any warning would fail here: these are silent
            assert jnp.asarray(x).dtype == jnp.float32 and jnp.arange(3).dtype == jnp.int32
        # Asking for float64 by name warns (jax_explicit_x64_dtypes defaults to "warn") ...
        with pytest.warns(UserWarning, match="Explicitly requested dtype float64"):
            assert jnp.zeros(2, dtype=jnp.float64).dtype == jnp.float32   # ... and still truncates
        with pytest.raises(ValueError, match="jax_enable_x64"):
            jax_dtype("float64")             # jaxport refuses instead of truncating
        before = jnp.ones(2)                 # an array that exists before x64 is switched on
    # x64 is not only a start-up flag: jax.enable_x64 is a context manager, usable any time.
    with jax.enable_x64(True):
        assert jnp.asarray(x).dtype == jnp.float64 and jnp.arange(3).dtype == jnp.int64
        assert (before + jnp.ones(2, jnp.float64)).dtype == jnp.float64
    # torch keeps numpy's float64, but a Python float becomes its default float32.
    assert torch.as_tensor(x).dtype == torch.float64 and torch.tensor([0.1]).dtype == torch.float32
    assert torch.tensor([1]).dtype == torch.int64


def test_linear_weight_is_out_in_kernel_is_in_out(x64):
    torch_layer = torch.nn.Linear(3, 2, dtype=torch.float64)
    flax_layer = nnx.Linear(3, 2, rngs=nnx.Rngs(0), dtype=jnp.float64, param_dtype=jnp.float64)
    assert tuple(torch_layer.weight.shape) == (2, 3) and flax_layer.kernel.shape == (3, 2)
    flax_layer.kernel[...] = jnp.asarray(torch_layer.weight.detach().numpy().T)   # y = x Wᵀ + b = x K + b
    flax_layer.bias[...] = jnp.asarray(torch_layer.bias.detach().numpy())
    x = np.random.default_rng(0).standard_normal((4, 3))
    np.testing.assert_allclose(np.asarray(flax_layer(jnp.asarray(x))),
                               torch_layer(torch.as_tensor(x)).detach().numpy(), rtol=1e-14)


def test_flax_default_init_is_lecun_normal_and_zero_bias():
    flax_default = nnx.Linear(200, 100, rngs=nnx.Rngs(0))
    torch_like = torch_linear(200, 100, rngs=nnx.Rngs(0), dtype=jnp.float32)
    bound = 1 / np.sqrt(200)
    assert np.all(np.asarray(flax_default.bias[...]) == 0)
    assert np.std(np.asarray(flax_default.kernel[...])) == pytest.approx(bound, rel=0.05)    # variance 1/fan_in
    assert np.max(np.abs(np.asarray(flax_default.kernel[...]))) > 2 * bound                  # normal tails
    kernel, bias = np.asarray(torch_like.kernel[...]), np.asarray(torch_like.bias[...])
    assert np.max(np.abs(kernel)) <= bound and np.std(kernel) == pytest.approx(bound / np.sqrt(3), rel=0.05)
    assert np.all(bias != 0) and np.max(np.abs(bias)) <= bound                                # U(±1/√fan_in)


def test_bce_backward_uses_a_float32_epsilon_even_in_float64(x64):
    # At p = 0 with label 1, torch's gradient is (p - y) / max(p(1 - p), eps) = -1 / eps.
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    torch.nn.functional.binary_cross_entropy(p, torch.ones(1, dtype=torch.float64)).backward()
    eps32 = float(np.float32(1e-12))         # 9.99999996e-13, not 1e-12
    assert p.grad.item() == -1 / eps32 and abs(p.grad.item() / -1e12 - 1) > 1e-9
    grad = jax.grad(losses.bce)(jnp.zeros(1), jnp.ones(1))
    assert float(grad[0]) == p.grad.item()


def test_padded_last_batch_gives_torchs_mean(x64):
    x = np.random.default_rng(0).standard_normal((100, 1))
    y = 2 * x
    loader = DataLoader(TensorDataset(torch.as_tensor(x), torch.as_tensor(y)), batch_size=30)
    batches = list(loader)
    assert [len(xb) for xb, _ in batches] == [30, 30, 30, 10]          # drop_last=False
    idx, weight = batch_indices(np.arange(100)[None], 30)  # (1 epoch, 4 steps, 30)
    assert idx.shape == (1, 4, 30) and weight.shape == (4, 30, 1)
    assert weight[:3].all() and weight[3].sum() == 10                   # padding has weight 0
    pred = np.zeros((100, 1))
    torch_last = torch.nn.MSELoss()(torch.zeros(10, 1, dtype=torch.float64), batches[-1][1]).item()
    jax_last = losses.mse(jnp.asarray(pred[idx[0, 3]]), jnp.asarray(y[idx[0, 3]]), jnp.asarray(weight[3]))
    assert float(jax_last) == pytest.approx(torch_last, rel=1e-14)
    assert float(losses.mse(jnp.asarray(pred[idx[0, 3]]), jnp.asarray(y[idx[0, 3]]))) != pytest.approx(torch_last)
