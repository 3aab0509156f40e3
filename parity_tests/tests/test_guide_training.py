"""Training beyond the tutorial's loop, as the guide states it: trainable parameters
against other state, randomness in the loop, the stateful nnx.Optimizer, learning-rate
schedules, gradient clipping, data loaders, and saving and loading weights. Numbers in
float64 where they are compared (relative 1e-13 unless stated)."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
import torch
from flax import nnx, traverse_util
from safetensors.numpy import load_file, save_file
from torch.utils.data import DataLoader, TensorDataset


WEIGHTS = nnx.Any(nnx.Param, nnx.BatchStat)      # what a checkpoint keeps (not the rng counters)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


class Net(nnx.Module):
    """Linear, dropout, batch norm: three kinds of state besides the parameters."""
    def __init__(self, *, rngs: nnx.Rngs):
        self.linear = nnx.Linear(3, 4, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)

    def __call__(self, x):
        return self.bn(self.drop(self.linear(x)))


def test_split_filters_params_from_rng_and_batch_stats():
    model, x = Net(rngs=nnx.Rngs(0)), jnp.ones((8, 3), jnp.float32)
    graphdef, state = nnx.split(model)                   # everything: Param, BatchStat, RngKey, RngCount
    whole = lambda state: nnx.merge(graphdef, state)(x).sum()
    with pytest.raises(TypeError, match="grad requires real- or complex-valued inputs.*uint32"):
        jax.grad(whole)(state)                          # the RngCount is an integer
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)   # trainable first, the rest after

    @jax.jit
    def step(params, rest):
        def loss_fn(params, rest):
            # copy=True: fresh Variables inside this trace, so dropout may advance its counter
            m = nnx.merge(graphdef, params, rest, copy=True)
            return (m(x) ** 2).mean(), nnx.state(m, nnx.Not(nnx.Param))   # new BatchStat, RngCount
        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest)
        return loss, grads, rest

    loss, grads, new_rest = step(params, rest)
    assert jax.tree.structure(grads) == jax.tree.structure(params)        # gradients for Params only
    assert int(new_rest["drop"]["rngs"]["count"][...]) == int(rest["drop"]["rngs"]["count"][...]) + 1
    assert not np.array_equal(new_rest["bn"]["mean"][...], rest["bn"]["mean"][...])   # running mean moved


def test_rngs_counts_its_draws_so_each_step_gets_a_fresh_key():
    rngs = nnx.Rngs(dropout=0)                            # a named stream
    drop = nnx.Dropout(0.5, rngs=rngs)                    # forks its own stream off it (one draw)
    assert int(rngs.dropout.count[...]) == 1 and int(drop.rngs.count[...]) == 0
    x = jnp.ones(100)
    a, b = drop(x), drop(x)
    assert int(drop.rngs.count[...]) == 2 and not jnp.array_equal(a, b)   # state, explicit and counted
    # Functional loops carry the key themselves: reusing one key repeats the mask ...
    key = jax.random.key(0)
    mask = lambda k: jax.random.bernoulli(k, 0.5, (100,))
    assert jnp.array_equal(mask(key), mask(key))
    # ... so derive one per step (fold_in the step number, or split and carry the new key).
    assert not jnp.array_equal(mask(jax.random.fold_in(key, 0)), mask(jax.random.fold_in(key, 1)))


def test_nnx_optimizer_updates_the_model_in_place_like_the_functional_step(x64):
    x, y = jnp.linspace(-1, 1, 16)[:, None], jnp.sin(jnp.linspace(-1, 1, 16))[:, None]
    make = lambda: nnx.Linear(1, 1, rngs=nnx.Rngs(0), dtype=jnp.float64, param_dtype=jnp.float64)
    loss_fn = lambda m: ((m(x) - y) ** 2).mean()
    model = make()
    optimizer = nnx.Optimizer(model, optax.adam(0.1), wrt=nnx.Param)

    @nnx.jit
    def nnx_step(model, optimizer):
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)                    # writes into model's Params
        return loss

    graphdef, params = nnx.split(make())
    tx = optax.adam(0.1)
    opt_state = tx.init(params)

    @jax.jit
    def jax_step(params, opt_state):
        loss, grads = jax.value_and_grad(lambda p: loss_fn(nnx.merge(graphdef, p)))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    for _ in range(5):
        nnx_step(model, optimizer)
        params, opt_state, _ = jax_step(params, opt_state)
    assert int(optimizer.step[...]) == 5
    np.testing.assert_allclose(np.asarray(model.kernel[...]), np.asarray(params["kernel"][...]), rtol=1e-13)


def test_nnx_jit_remedies_cached_partial_and_graph_false_take_the_same_steps():
    """Flax's remedies for nnx.jit's per-call graph walk change its cost, not its result."""
    x, y = jnp.linspace(-1, 1, 16, dtype=jnp.float32)[:, None], jnp.ones((16, 1), jnp.float32)

    def train_step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: ((m(x) - y) ** 2).mean())(model)
        optimizer.update(model, grads)
        return loss

    kernels = {}
    for way in ("nnx.jit", "cached_partial", "graph=False"):
        model = nnx.Linear(1, 1, rngs=nnx.Rngs(0))
        optimizer = nnx.Optimizer(model, optax.adam(0.1), wrt=nnx.Param)
        if way == "cached_partial":                       # the graph walk done once, then cached
            step = nnx.cached_partial(nnx.jit(train_step), model, optimizer)
        else:
            jitted = nnx.jit(train_step, graph=way == "nnx.jit")   # graph=False: modules as pytrees
            step = lambda: jitted(model, optimizer)
        for _ in range(5):
            step()
        assert int(optimizer.step[...]) == 5
        kernels[way] = np.asarray(model.kernel[...])
    initial = np.asarray(nnx.Linear(1, 1, rngs=nnx.Rngs(0)).kernel[...])
    assert abs(kernels["nnx.jit"][0, 0] - initial[0, 0]) > 0.1           # 5 Adam steps of 0.1 moved it
    assert kernels["cached_partial"].tolist() == kernels["nnx.jit"].tolist() == kernels["graph=False"].tolist()


def torch_lrs(steps_per_epoch, epochs):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)  # halve every 2 epochs
    lrs = []
    for _ in range(epochs):
        for _ in range(steps_per_epoch):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
        sched.step()                                      # once per epoch
    return lrs


def test_schedule_counts_steps_torch_scheduler_counts_epochs():
    lrs = torch_lrs(steps_per_epoch=3, epochs=6)
    # An optax schedule is a function of the step count that tx.update keeps: say it in steps.
    per_step = optax.exponential_decay(0.1, transition_steps=2 * 3, decay_rate=0.5, staircase=True)
    np.testing.assert_allclose([float(per_step(i)) for i in range(18)], lrs, rtol=1e-7)
    in_epochs = optax.exponential_decay(0.1, transition_steps=2, decay_rate=0.5, staircase=True)
    # Epochs taken for steps: by the last step, 8 halvings instead of torch's 2.
    assert float(in_epochs(17)) == pytest.approx(0.1 * 0.5 ** 8) and lrs[17] == pytest.approx(0.1 * 0.5 ** 2)


def test_inject_hyperparams_changes_the_learning_rate_mid_run(x64):
    p0 = np.array([0.5, -2.0, 3.0])
    grad_of = lambda p: 2 * (p - 1.0)
    tp = torch.tensor(p0, requires_grad=True)
    topt = torch.optim.Adam([tp], lr=0.1)
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=0.1)
    p, state = jnp.asarray(p0), tx.init(jnp.asarray(p0))
    for step in range(4):
        if step == 2:                                     # like torch's param_groups[0]["lr"] = ...
            topt.param_groups[0]["lr"] = 0.01
            state.hyperparams["learning_rate"] = jnp.asarray(0.01)
        tp.grad = grad_of(tp.detach())
        topt.step()
        updates, state = tx.update(grad_of(p), state, p)
        p = optax.apply_updates(p, updates)
    np.testing.assert_allclose(np.asarray(p), tp.detach().numpy(), rtol=1e-13)


def test_clip_by_global_norm_matches_clip_grad_norm_up_to_torchs_1e_6(x64):
    grads = [np.array([3.0, 4.0]), np.array([12.0])]                    # global norm 13
    tgrads = [torch.tensor(g) for g in grads]
    params = [torch.zeros(2, requires_grad=True, dtype=torch.float64), torch.zeros(1, requires_grad=True, dtype=torch.float64)]
    for p, g in zip(params, tgrads):
        p.grad = g
    total = torch.nn.utils.clip_grad_norm_(params, max_norm=1.0)         # returns the norm before
    clipped, _ = optax.clip_by_global_norm(1.0).update([jnp.asarray(g) for g in grads], None)
    assert total.item() == 13.0
    np.testing.assert_allclose(np.asarray(clipped[0]), np.array([3.0, 4.0]) / 13, rtol=1e-15)
    # torch scales by max_norm / (norm + 1e-6): smaller by a relative 1e-6 / 13.
    np.testing.assert_allclose(params[0].grad.numpy(), np.array([3.0, 4.0]) / (13 + 1e-6), rtol=1e-15)
    assert np.max(np.abs(params[0].grad.numpy() / np.asarray(clipped[0]) - 1)) == pytest.approx(1e-6 / 13, rel=1e-6)


def test_ragged_last_batch_compiles_twice_drop_last_or_pad():
    x = np.random.default_rng(0).standard_normal((100, 3)).astype(np.float32)
    step = jax.jit(lambda xb: (xb ** 2).mean())

    def epoch(loader):
        before = step._cache_size()
        for (xb,) in loader:
            step(xb.numpy())                              # a DataLoader still feeds JAX: numpy batches
        return step._cache_size() - before

    ds = TensorDataset(torch.as_tensor(x))
    assert epoch(DataLoader(ds, batch_size=30)) == 2                # 30, 30, 30 then 10: a second program
    assert epoch(DataLoader(ds, batch_size=30)) == 0                # both cached from now on
    assert epoch(DataLoader(ds, batch_size=25, drop_last=True)) == 1


def test_checkpoint_state_dict_vs_nnx_state_safetensors_and_orbax(tmp_path):
    model = Net(rngs=nnx.Rngs(0))
    model.bn.mean[...] = jnp.arange(4, dtype=jnp.float32)                  # running stats are saved too
    # torch: torch.save(model.state_dict()) / model.load_state_dict(...). NNX: a flat dict.
    flat = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model, WEIGHTS)), sep=".")
    assert sorted(flat) == ["bn.bias", "bn.mean", "bn.scale", "bn.var", "linear.bias", "linear.kernel"]
    save_file({k: np.asarray(v) for k, v in flat.items()}, tmp_path / "w.safetensors")
    fresh = Net(rngs=nnx.Rngs(1))                         # other weights; then overwrite them
    state = nnx.state(fresh, WEIGHTS)
    nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(load_file(tmp_path / "w.safetensors"), sep="."))
    nnx.update(fresh, state)                              # like load_state_dict: in place
    x = jnp.ones((2, 3))
    fresh.eval(), model.eval()
    assert jnp.array_equal(fresh(x), model(x)) and jnp.array_equal(fresh.bn.mean[...], jnp.arange(4, dtype=jnp.float32))
    # orbax restores into an abstract model: nnx.eval_shape allocates nothing (torch's meta device).
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "orbax", nnx.state(model))
    checkpointer.wait_until_finished()
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Net(rngs=nnx.Rngs(2))))
    restored = nnx.merge(graphdef, checkpointer.restore(tmp_path / "orbax", abstract))
    restored.eval()
    assert jnp.array_equal(restored(x), model(x)) and os.path.isdir(tmp_path / "orbax")


def test_eval_shape_is_torchs_meta_device():
    with torch.device("meta"):
        big = torch.nn.Linear(20_000, 20_000)             # 400M parameters, no memory
    assert big.weight.is_meta and tuple(big.weight.shape) == (20_000, 20_000)
    abstract = nnx.eval_shape(lambda: nnx.Linear(20_000, 20_000, rngs=nnx.Rngs(0)))
    kernel = abstract.kernel.get_value()                  # no array behind it to index
    assert isinstance(kernel, jax.ShapeDtypeStruct) and kernel.shape == (20_000, 20_000)
    # Loading real weights into it: torch load_state_dict(..., assign=True); NNX as above.
    small = torch.nn.Linear(2, 2, device="meta")
    small.load_state_dict({"weight": torch.eye(2), "bias": torch.zeros(2)}, assign=True)
    assert not small.weight.is_meta and small(torch.ones(1, 2)).tolist() == [[1.0, 1.0]]
