"""jit in practice, as the guide states it: what makes a jitted function compile again,
buffer donation, asynchronous dispatch and compile logging, pytrees, vmap and has_aux.
Compiles are counted with the jitted function's own cache (`_cache_size`) or with
jax_log_compiles, never with timings."""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch


def test_what_makes_jit_compile_again():
    traces = []

    @jax.jit
    def double(tree):
        traces.append(1)                      # runs while tracing only
        return jax.tree.map(lambda v: v * 2, tree)

    def compiles(*calls):
        before = double._cache_size()
        for args in calls:
            double(*args)
        return double._cache_size() - before

    x = jnp.ones(3, jnp.float32)
    assert compiles((x,), (x + 1,)) == 1                                  # new values: cached
    assert compiles(({"a": x},), ({"b": x},), ((x, x),)) == 3             # pytree structure (keys too)
    assert jnp.asarray(1.0).weak_type and not jnp.float32(1.0).weak_type
    assert compiles((jnp.float32(1.0),), (1.0,)) == 2                     # weak type: a Python float
    cpu = jax.devices("cpu")[0]
    committed = jax.device_put(x, cpu)                                    # placed on purpose
    assert committed.committed and not jnp.ones(3).committed
    assert compiles((committed,)) == 1                                    # same device, but committed
    with jax.enable_x64(not jax.config.jax_enable_x64):                   # flip it, whichever it is
        assert compiles((x,)) == 1                                        # a config flag is in the key
    assert compiles((x,), (committed,), ({"a": x},)) == 0                 # all of them cached now


def test_donated_buffers_are_reused_others_are_not():
    step = jax.jit(lambda x: x * 0.5 + 1.0, donate_argnums=0)
    x = jnp.ones(10_000)
    address = x.unsafe_buffer_pointer()
    y = step(x)
    assert x.is_deleted() and y.unsafe_buffer_pointer() == address       # the output took x's buffer
    with pytest.raises(RuntimeError, match="deleted"):
        x + 1                                                             # x is gone
    plain = jax.jit(lambda x: x * 0.5 + 1.0)
    z = plain(y)
    assert not y.is_deleted() and z.unsafe_buffer_pointer() != y.unsafe_buffer_pointer()   # a new buffer


def test_dispatch_is_asynchronous_and_compiles_can_be_logged(caplog):
    def tanh_sum(a, b):
        return jnp.tanh(a @ b).sum()
    f = jax.jit(tanh_sum)
    a = jnp.ones((61, 61))                    # a shape no other test uses: nothing cached yet
    with caplog.at_level(logging.WARNING, logger="jax"), jax.log_compiles(True):
        out = f(a, a)                         # returns as soon as the work is queued ...
        f(a + 1, a)                           # same shapes: no second compile of tanh_sum
    compiled = [r.getMessage().split(" with ")[0] for r in caplog.records
                if r.getMessage().startswith("Compiling")]
    # An eager op outside jit is compiled (once per shape) too: `a + 1` is jit(add).
    assert compiled.count("Compiling jit(tanh_sum)") == 1 and "Compiling jit(add)" in compiled
    # ... so time with block_until_ready (float() and np.asarray() wait as well).
    assert out.block_until_ready() is out and float(out) == pytest.approx(61 * 61 * np.tanh(61.0))


def test_pytrees_are_nested_containers_of_arrays():
    params = {"hidden": {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}, "out": [jnp.ones(3), 2.0]}
    leaves, treedef = jax.tree.flatten(params)
    assert len(leaves) == 4 and treedef.num_leaves == 4                   # dict keys sorted, lists in order
    doubled = jax.tree.map(lambda v: v * 2, params)
    assert float(doubled["out"][1]) == 4.0 and doubled["hidden"]["w"].shape == (2, 3)
    grads = jax.grad(lambda p: sum(jnp.sum(v) for v in jax.tree.leaves(p)))(params)
    assert jax.tree.structure(grads) == treedef                           # gradients mirror the params
    # torch's nearest thing is a flat state_dict (names -> tensors), or its private torch.utils._pytree.


def test_vmap_gives_per_example_gradients():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        w, xs, ys = rng.standard_normal(3), rng.standard_normal((5, 3)), rng.standard_normal(5)
        loss = lambda w, x, y: (jnp.dot(w, x) - y) ** 2                   # one example
        per_example = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(w, xs, ys)   # (5, 3)
        # torch: one backward per example (or torch.func.vmap over torch.func.grad).
        tw = torch.tensor(w, requires_grad=True)
        rows = []
        for x, y in zip(xs, ys):
            (g,) = torch.autograd.grad((tw @ torch.as_tensor(x) - float(y)) ** 2, tw)
            rows.append(g.numpy())
        np.testing.assert_allclose(np.asarray(per_example), np.stack(rows), rtol=1e-13)
        # vmap adds the batch axis: a function of one example runs on all five at once.
        assert jax.vmap(loss, in_axes=(None, 0, 0))(w, xs, ys).shape == (5,)


def test_has_aux_returns_extra_outputs_without_differentiating_them():
    def loss_fn(w, x):
        pred = x @ w
        return jnp.mean(pred ** 2), {"pred": pred}                       # (loss, aux)
    w, x = jnp.array([1.0, -2.0]), jnp.array([[1.0, 1.0], [2.0, 0.5]])
    (loss, aux), grad = jax.value_and_grad(loss_fn, has_aux=True)(w, x)
    # pred = [-1, 1]; loss = 1; d/dw mean(pred²) = 2/2 · xᵀ pred = [1, -0.5]
    assert float(loss) == 1.0 and aux["pred"].tolist() == [-1.0, 1.0] and grad.tolist() == [1.0, -0.5]
    with pytest.raises(TypeError, match="scalar"):
        jax.grad(loss_fn)(w, x)               # without has_aux the tuple is not a scalar loss
