"""Training with Optax, generic over the examples. `fit` compiles the whole run, every
epoch and every batch, into one XLA program (two nested lax.scan), or for a long run
one program per chunk of epochs (see portcore/schedule.py); parameters and
optimizer state cross this API as numpy mappings with PyTorch names, so the torch
twin can be fed the same state. Twin: torchref/training.py.

NNX modules are stateful Python objects; inside compiled code we use the functional
form instead: nnx.split(model) -> (graphdef, state), and nnx.merge(graphdef, state)
rebuilds the module from a state pytree at trace time, at no run-time cost.
"""
from __future__ import annotations

import functools
import sys
import time

import jax
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from portcore import schedule, specs
from jaxport import example_module, model_state
from jaxport.convert import load_numpy, to_numpy, to_state
from jaxport.numerics import dtype_scoped, jax_device, jax_dtype
from jaxport.optim import torch_adam

# How many times fit has compiled its program: once per configuration (test_jaxport).
compile_count = 0
_programs = {}


@dtype_scoped
def build_model(example, params=None, *, dtype="float32", device="cpu", form="class", seed=0):
    """The example's nnx.Module. Without params: torch's init distribution, JAX's PRNG."""
    jax_dtype(dtype)
    with jax.default_device(jax_device(device)):
        model = example_module(example).build_model(form, seed=seed, dtype=dtype)
        if params is not None:
            load_numpy(model, params, example, form)
    return model


@dtype_scoped
def default_params(example, seed=0, *, dtype="float32", form="class") -> dict:
    """jaxport's default initial parameters for this seed, in the exchange format."""
    return to_numpy(nnx.state(build_model(example, dtype=dtype, form=form, seed=seed)), example, form)


def make_optimizer(config: specs.TrainConfig) -> optax.GradientTransformation:
    if config.optimizer == "sgd":
        # optax.sgd's trace is torch's momentum buffer with dampening 0.
        return optax.sgd(config.lr, momentum=config.momentum or None)
    if config.optimizer == "adam":
        # optax.adam is the same algorithm (eps outside the root), but its bias
        # corrections are computed in JAX's default float: see jaxport/optim.py.
        b1, b2 = config.betas
        return torch_adam(config.lr, b1=b1, b2=b2, eps=config.eps)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


def device_array(array, dtype, device) -> jax.Array:
    """`array` on the device, in its own buffer. On CPU, device_put may adopt an aligned
    numpy buffer without copying, so a caller editing its array afterwards would edit
    ours: copy first (the copy is private, so sharing it is harmless). Integer arrays
    (class labels) stay integers, as int32, JAX's default integer."""
    kind = np.int32 if np.issubdtype(np.asarray(array).dtype, np.integer) else jax_dtype(dtype)
    return jax.device_put(np.array(array, dtype=kind, copy=True), jax_device(device))


@functools.lru_cache(maxsize=None)
def _skeleton(example, form, dtype, device):
    """(graphdef, template state) of a model: built once, since building draws an
    initialisation that `_split` would throw away."""
    return nnx.split(build_model(example, dtype=dtype, device=device, form=form))


def _split(example, params, dtype, device, form):
    """(graphdef, state holding `params`, or a copy of the template for None)."""
    graphdef, template = _skeleton(example, form, dtype, device)
    state = (jax.tree.map(lambda leaf: leaf, template) if params is None
             else to_state(params, template, example, form, jax_dtype(dtype)))
    return graphdef, jax.device_put(state, jax_device(device))


@functools.lru_cache(maxsize=None)
def _loss_fn(example, graphdef):
    """(state, x, y, weight) -> (loss, gradients of the parameters, the rest of the state
    after the forward pass: BatchNorm's running stats, the dropout step; jaxport/model_state.py)."""
    return model_state.value_and_grad(example_module(example), graphdef)


@functools.lru_cache(maxsize=None)
def _value_and_grad(example, graphdef):
    return jax.jit(_loss_fn(example, graphdef))


@functools.lru_cache(maxsize=None)
def _forward(graphdef):
    # predict: evaluation mode (running statistics, no dropout), like torch's model.eval()
    return jax.jit(lambda state, x: model_state.eval_view(nnx.merge(graphdef, state))(x))


@dtype_scoped
def loss_and_grads(example, params, x, y, *, dtype="float32", device="cpu", form="class"):
    """(loss, {name: gradient}) of the example's loss on (x, y) at `params`."""
    graphdef, state = _split(example, params, dtype, device, form)
    loss, grads, _ = _value_and_grad(example, graphdef)(state, device_array(x, dtype, device), device_array(y, dtype, device))
    return float(loss), to_numpy(grads, example, form)


@dtype_scoped
def predict(example, params, x, *, dtype="float32", device="cpu", form="class") -> np.ndarray:
    graphdef, state = _split(example, params, dtype, device, form)
    return np.asarray(_forward(graphdef)(state, device_array(x, dtype, device)))


# Optax's state fields and torch's names for the same moments.
_MOMENTS = {"mu": "exp_avg", "nu": "exp_avg_sq", "trace": "momentum_buffer"}


def opt_state_to_numpy(opt_state, example, form="class") -> dict:
    out = {}
    for field, torch_key in _MOMENTS.items():
        moment = optax.tree_utils.tree_get(opt_state, field)
        if moment is not None:
            out.update({f"{torch_key}/{n}": v for n, v in to_numpy(moment, example, form).items()})
    count = optax.tree_utils.tree_get(opt_state, "count")
    if count is not None:
        out["step"] = np.asarray(float(count))
    return out


def opt_state_from_numpy(template, state: dict, example, form="class", dtype=None):
    """`template` (from tx.init) with the moments and step count of `state` put in."""
    changes = {}
    for field, torch_key in _MOMENTS.items():
        moment = {k.split("/", 1)[1]: v for k, v in state.items() if k.startswith(torch_key + "/")}
        if moment:
            changes[field] = to_state(moment, optax.tree_utils.tree_get(template, field), example, form, dtype)
    if "step" in state:
        changes["count"] = jax.numpy.asarray(int(state["step"]), dtype=jax.numpy.int32)
    return optax.tree_utils.tree_set(template, **changes) if changes else template


@functools.lru_cache(maxsize=None)
def _step_fn(example, graphdef, config):
    value_and_grad, tx = _loss_fn(example, graphdef), make_optimizer(config)

    @jax.jit
    def step(state, opt_state, x, y):
        loss, grads, rest = value_and_grad(state, x, y)
        params = model_state.split(state)[0]
        updates, opt_state = tx.update(grads, opt_state, params)
        return loss, grads, model_state.merge(optax.apply_updates(params, updates), rest), opt_state
    return step


@dtype_scoped
def train_step(example, params, opt_state, x, y, config, *, dtype="float32", device="cpu",
               form="class"):
    """One optimizer step from (params, opt_state) on the batch (x, y).

    Returns (loss before the update, grads, new params, new opt_state), all numpy.
    opt_state None or {} is a fresh optimizer.
    """
    graphdef, state = _split(example, params, dtype, device, form)
    template = make_optimizer(config).init(model_state.split(state)[0])
    opt = opt_state_from_numpy(template, opt_state or {}, example, form, jax_dtype(dtype))
    # Committed to the device like `state`, so the jitted step sees the same input
    # placement every call and compiles once.
    opt = jax.device_put(opt, jax_device(device))
    loss, grads, state, opt = _step_fn(example, graphdef, config)(
        state, opt, device_array(x, dtype, device), device_array(y, dtype, device))
    return (float(loss), to_numpy(grads, example, form), to_numpy(state, example, form),
            opt_state_to_numpy(opt, example, form))


def batch_indices(order: np.ndarray, batch_size: int):
    """(epochs, N) order -> indices (epochs, steps, batch_size) and weights (steps, B, 1).

    XLA needs static shapes, so the last partial batch is padded with index 0 and
    weight 0; weights are None when batch_size divides N.
    """
    epochs, n = order.shape
    steps = specs.steps_per_epoch(n, batch_size)
    pad = steps * batch_size - n
    idx = np.concatenate([order, np.zeros((epochs, pad), order.dtype)], axis=1)
    weight = (np.arange(steps * batch_size) < n).reshape(steps, batch_size, 1) if pad else None
    return idx.reshape(epochs, steps, batch_size).astype(np.int32), weight


def _train_program(example, graphdef, config, frames, batch_sharding=None):
    """A run of epochs as one function of arrays: scan over epochs of scan over batches.
    The optimizer state goes in and out, so a long run is this program chunk after chunk.
    batch_sharding: data parallel (jaxport/parallel.py), each batch's rows split across
    the devices; None on one device."""
    ex, tx = example_module(example), make_optimizer(config)
    value_and_grad = _loss_fn(example, graphdef)

    def run(state, opt_state, x, y, idx, weight):  # idx (epochs, steps, B)
        def step(carry, batch):
            state, opt_state = carry
            ib, wb = batch                         # (B,), (B, 1) or None
            xb, yb = x[ib], y[ib]
            if batch_sharding is not None:         # each device its own rows of the batch
                xb, yb = (jax.lax.with_sharding_constraint(a, batch_sharding) for a in (xb, yb))
            loss, grads, rest = value_and_grad(state, xb, yb, wb)
            params = model_state.split(state)[0]
            updates, opt_state = tx.update(grads, opt_state, params)
            return (model_state.merge(optax.apply_updates(params, updates), rest), opt_state), loss

        def epoch(carry, idx_e):
            frame = ex.frame(nnx.merge(graphdef, carry[0]), x) if frames else None
            carry, losses = jax.lax.scan(step, carry, (idx_e, weight))
            return carry, (losses, frame)

        (state, opt_state), (losses, frame_stack) = jax.lax.scan(epoch, (state, opt_state), idx)
        return state, opt_state, losses, frame_stack   # losses (epochs, steps)
    return run


@dtype_scoped
def fit(example, params, x, y, order, config, *, dtype="float32", device="cpu", form="class",
        frames=False, progress=False, stop_on_divergence=False, chunk_epochs=None,
        devices=1) -> specs.FitResult:
    """The whole run from `params`, compiled once per configuration and then reused.

    order: (epochs, N) sample indices (specs.batch_order) or a schedule.EpochOrder.
    A run of up to schedule.CHUNK_STEPS steps is one XLA program; a longer one runs
    chunk_epochs epochs at a time (one compilation for all full chunks, bit-identical to
    one program), so memory stays bounded. frames: record the animation's state
    (module.frame) at the start of every kept epoch. stop_on_divergence: stop after the
    chunk in which a loss became inf or NaN. devices: data parallel over that many
    devices (jaxport/parallel.py: the global batch split, the loss its global weighted
    mean); 1 is this function's own single-device path.
    """
    global compile_count
    if devices != 1:
        from jaxport import parallel
        return parallel.fit(example, params, x, y, order, config, devices=devices, dtype=dtype,
                            device=device, form=form, frames=frames, progress=progress,
                            stop_on_divergence=stop_on_divergence, chunk_epochs=chunk_epochs)
    epochs, n = schedule.order_size(order)
    size = chunk_epochs or schedule.chunk_epochs(n, config.batch_size)
    graphdef, state = _split(example, params, dtype, device, form)
    dev = jax_device(device)
    opt_state = jax.device_put(make_optimizer(config).init(model_state.split(state)[0]), dev)
    x_, y_ = device_array(x, dtype, device), device_array(y, dtype, device)
    steps = specs.steps_per_epoch(n, config.batch_size)
    rec = schedule.Recorder(epochs, steps)
    # Compile up front, for the full chunks and the shorter last one, so that the
    # progress bar below measures training only.
    compile_seconds, programs = 0.0, {}
    for count in sorted({min(size, epochs), epochs % size if epochs > size else 0} - {0}):
        key = (example, graphdef, config.replace(shuffle=False), frames, dtype, device,
               np.shape(x), np.shape(y), (count, steps, config.batch_size))
        if key not in _programs:
            if progress:
                print(f"jax {example}: compiling a {count}-epoch program ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            idx, weight = batch_indices(np.zeros((count, n), np.int64), config.batch_size)
            args = (state, opt_state, x_, y_, *jax.device_put((idx, weight), dev))
            _programs[key] = jax.jit(_train_program(example, graphdef, config, frames)).lower(*args).compile()
            compile_count += 1
            compile_seconds += time.perf_counter() - start
        programs[count] = _programs[key]
    train_seconds, host_idx = 0.0, None
    with tqdm(total=epochs, desc=f"jax {example}", unit="epoch", disable=not progress,
              leave=False, file=sys.stderr) as bar:
        for chunk in schedule.order_chunks(order, size):
            if chunk is not host_idx:              # an unshuffled order repeats one array
                idx_, weight_ = jax.device_put(batch_indices(np.asarray(chunk), config.batch_size), dev)
                host_idx = chunk
            start = time.perf_counter()
            state, opt_state, losses, frame_stack = jax.block_until_ready(
                programs[len(chunk)](state, opt_state, x_, y_, idx_, weight_))
            train_seconds += time.perf_counter() - start
            rows = rec.rows(rec.epochs_run, len(chunk))
            rec.add(np.asarray(losses), np.asarray(frame_stack)[rows] if frames else None)
            bar.update(len(chunk))
            if stop_on_divergence and rec.nonfinite_loss_step is not None:
                break
    if progress:
        print(f"jax {example}: compiled in {compile_seconds:.2f} s, trained in {train_seconds:.3f} s",
              file=sys.stderr, flush=True)
    return rec.result(to_numpy(state, example, form), train_seconds, compile_seconds)
