"""jaxport's compiled functions, owned by a `Programs` object rather than module
globals: a test can make its own, count its compilations, and drop it. `training`
uses DEFAULT unless a caller passes another; `training.clear_caches()` empties it.

Also here: the whole-run program (two nested lax.scan) and the loop that runs it chunk
after chunk, shared by one-device and data-parallel fits (a `Placement` says where
the arrays go).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable

import jax
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

# convert and optim as modules, not names, so that the suite's planted bugs can replace them.
from jaxport import convert, example_module, model_state, optim
from jaxport.numerics import jax_device, jax_dtype
from jaxport.state import opt_state_from_numpy, opt_state_to_numpy
from portcore import registry, schedule, specs


class Programs:
    """Compiled programs and the traced functions they are built from, keyed on what
    changes them (example, form, dtype, device, configuration, shapes)."""

    def __init__(self):
        self.compile_count = 0       # whole-run programs compiled (one per configuration)
        self._memo: dict = {}

    def memo(self, key, build: Callable):
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]

    def clear(self) -> None:
        self._memo.clear()

    def compiled(self) -> dict:
        """The whole-run programs: {key: compiled}, key[-1] its (epochs, steps, batch)."""
        return {k[1:]: v for k, v in self._memo.items() if k[0] == "run"}

    # ---- the traced pieces -------------------------------------------------------------
    def skeleton(self, example, form, dtype, device):
        """(graphdef, template state) of a model: built once, since building draws an
        initialisation that `split` would throw away."""
        def build():
            with jax.default_device(jax_device(device)):
                return nnx.split(example_module(example).build_model(form, seed=0, dtype=dtype))
        return self.memo(("skeleton", example, form, dtype, device), build)

    def split(self, example, params, dtype, device, form):
        """(graphdef, state holding `params`, or a copy of the template for None)."""
        graphdef, template = self.skeleton(example, form, dtype, device)
        state = (jax.tree.map(lambda leaf: leaf, template) if params is None
                 else convert.to_state(params, template, example, form, jax_dtype(dtype)))
        return graphdef, jax.device_put(state, jax_device(device))

    def loss_fn(self, example, graphdef):
        """(state, x, y, weight=None) -> (loss, gradients of the parameters, the state's
        other variables after the forward pass: BatchNorm's running statistics, the
        dropout step; jaxport/model_state.py). A model of parameters only has no other."""
        return self.memo(("loss", example, graphdef),
                         lambda: model_state.value_and_grad(example_module(example), graphdef))

    def value_and_grad(self, example, graphdef):
        return self.memo(("value_and_grad", example, graphdef), lambda: jax.jit(self.loss_fn(example, graphdef)))

    def forward(self, graphdef):
        """predict's model: in evaluation mode (running statistics, no dropout), like
        torch's model.eval()."""
        return self.memo(("forward", graphdef), lambda: jax.jit(
            lambda state, x: model_state.eval_view(nnx.merge(graphdef, state))(x)))

    def step(self, example, graphdef, config):
        """One optimizer step, jitted: (state, opt_state, x, y) -> (loss, grads, state, opt_state)."""
        def build():
            value_and_grad, tx = self.loss_fn(example, graphdef), optim.make_optimizer(config)

            @jax.jit
            def step(state, opt_state, x, y):
                loss, grads, rest = value_and_grad(state, x, y)
                params = model_state.split(state)[0]
                updates, opt_state = tx.update(grads, opt_state, params)
                return loss, grads, model_state.merge(optax.apply_updates(params, updates), rest), opt_state
            return step
        return self.memo(("step", example, graphdef, config), build)


DEFAULT = Programs()


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


def train_program(programs, example, graphdef, config, frames, batch_sharding=None):
    """A run of epochs as one function of arrays: scan over epochs of scan over batches.
    The optimizer state goes in and out, so a long run is this program chunk after chunk.
    batch_sharding: data parallel (jaxport/parallel.py), each batch's rows split across
    the devices; None on one device."""
    ex, tx = example_module(example), optim.make_optimizer(config)
    value_and_grad = programs.loss_fn(example, graphdef)

    def run(state, opt_state, x, y, idx, weight):  # idx (epochs, steps, B)
        like = model_state.split(state)[0]
        pack, unpack = carried_params(ex, like)    # the parameters as the loop carries them

        def step(carry, batch):
            (params, rest), opt_state = carry
            ib, wb = batch                         # (B,), (B, 1) or None
            xb, yb = x[ib], y[ib]
            if batch_sharding is not None:         # each device its own rows of the batch
                xb, yb = (jax.lax.with_sharding_constraint(a, batch_sharding) for a in (xb, yb))
            loss, grads, rest = value_and_grad(model_state.merge(unpack(params), rest), xb, yb, wb)
            updates, opt_state = tx.update(pack(grads), opt_state, params)
            return ((optax.apply_updates(params, updates), rest), opt_state), loss

        def epoch(carry, idx_e):
            (params, rest), _ = carry
            frame = ex.frame(nnx.merge(graphdef, model_state.merge(unpack(params), rest)), x) if frames else None
            carry, losses = jax.lax.scan(step, carry, (idx_e, weight))
            return carry, (losses, frame)

        params, rest = model_state.split(state)
        carry = ((pack(params), rest), map_param_trees(pack, opt_state, like))
        ((params, rest), opt_state), (losses, frame_stack) = jax.lax.scan(epoch, carry, idx)
        opt_state = map_param_trees(unpack, opt_state, jax.eval_shape(pack, like))
        return model_state.merge(unpack(params), rest), opt_state, losses, frame_stack   # losses (epochs, steps)
    return run


def carried_params(example_module_, like):
    """(pack, unpack): the parameters as the compiled loop carries them and back. An
    example module may define pack_params(params) and unpack_params(packed, like) (the
    lstm: its cell's 16 arrays as one block, jaxport/lstm.py); the optimizer then updates
    the packed arrays, entry by entry the same numbers (torch_adam and SGD are
    elementwise), in fewer and larger ops. Else the parameters as they are."""
    pack = getattr(example_module_, "pack_params", None)
    if pack is None:
        return (lambda params: params), (lambda params: params)
    return pack, lambda packed: example_module_.unpack_params(packed, like)


def map_param_trees(f, tree, like):
    """`tree` (an optimizer state) with f applied to each subtree shaped like the
    parameters `like` (the moments), the rest (the step count) as it is."""
    shape = jax.tree.structure(like)
    hit = lambda t: jax.tree.structure(t) == shape      # noqa: E731
    return jax.tree.map(lambda t: f(t) if hit(t) else t, tree, is_leaf=hit)


@dataclass
class Placement:
    """Where a fit's arrays live. One device: device_put; data parallel: parallel.py's."""
    put_tree: Callable           # a pytree of the model's or optimizer's state
    put_data: Callable           # (x or y, dtype name: the run's, or "int" for labels)
    put_batches: Callable        # an (epochs, N) order chunk -> (idx, weight) on the devices
    to_host: Callable            # an output -> numpy
    jit: Callable                # a traced run -> jitted function
    key: tuple = ()              # what else the compiled program depends on
    label: str = ""              # for progress lines: "" or " for 4 devices"


def run_fit(programs, example, params, x, y, order, config, place: Placement, *, dtype, device,
            form, frames, progress, stop_on_divergence, chunk_epochs, batch_sharding=None,
            opt_state=None, checkpoint=None) -> specs.FitResult:
    """The whole run from `params` (and `opt_state`: None for a fresh optimizer),
    compiled once per configuration and then reused; a run of more than
    schedule.CHUNK_STEPS steps goes chunk_epochs epochs at a time, and a `checkpoint`
    (portcore/checkpoint.py) splits chunks at its multiples of epochs and is written there."""
    epochs, n = schedule.order_size(order)
    size, every = chunk_epochs or schedule.chunk_epochs(n, config.batch_size), checkpoint and checkpoint.every
    graphdef, state = programs.split(example, params, dtype, device, form)
    opt = optim.make_optimizer(config).init(model_state.split(state)[0])
    opt = opt_state_from_numpy(opt, opt_state, example, form, jax_dtype(dtype)) if opt_state else opt
    state, opt_state = place.put_tree(state), place.put_tree(opt)
    x_, y_ = place.put_data(x, dtype), place.put_data(y, registry.get(example).label_dtype(dtype))
    steps = specs.steps_per_epoch(n, config.batch_size)
    rec = schedule.Recorder(epochs, steps)
    # Compile up front, for the full chunks and the shorter last one, so that the
    # progress bar below measures training only.
    compile_seconds, compiled = 0.0, {}
    for count in sorted(schedule.order_counts(order, size, every)):
        key = ("run", example, graphdef, config.replace(shuffle=False), frames, dtype, device,
               np.shape(x), np.shape(y), *place.key, (count, steps, config.batch_size))

        def build():
            nonlocal compile_seconds
            if progress:
                print(f"jax {example}: compiling a {count}-epoch program{place.label} ...",
                      file=sys.stderr, flush=True)
            start = time.perf_counter()
            args = (state, opt_state, x_, y_, *place.put_batches(np.zeros((count, n), np.int64)))
            run = train_program(programs, example, graphdef, config, frames, batch_sharding)
            program = place.jit(run).lower(*args).compile()
            programs.compile_count += 1
            compile_seconds += time.perf_counter() - start
            return program
        compiled[count] = programs.memo(key, build)
    train_seconds, host_idx = 0.0, None
    with tqdm(total=epochs, desc=f"jax {example}{place.label}", unit="epoch", disable=not progress,
              leave=False, file=sys.stderr) as bar:
        for chunk in schedule.order_chunks(order, size, every):
            if chunk is not host_idx:              # an unshuffled order repeats one array
                idx_, weight_ = place.put_batches(np.asarray(chunk))
                host_idx = chunk
            start = time.perf_counter()
            state, opt_state, losses, frame_stack = jax.block_until_ready(
                compiled[len(chunk)](state, opt_state, x_, y_, idx_, weight_))
            train_seconds += time.perf_counter() - start
            kept = rec.rows(rec.epochs_run, len(chunk))
            rec.add(place.to_host(losses), place.to_host(frame_stack)[kept] if frames else None)
            bar.update(len(chunk))
            if checkpoint is not None and checkpoint.due(order, rec.epochs_run):
                host = jax.tree.map(place.to_host, (state, opt_state))
                checkpoint.write(order, rec.epochs_run, convert.to_numpy(host[0], example, form),
                                 opt_state_to_numpy(host[1], example, form))
            if stop_on_divergence and rec.nonfinite_loss_step is not None:
                break
    if progress:
        print(f"jax {example}: compiled in {compile_seconds:.2f} s, trained{place.label} in "
              f"{train_seconds:.3f} s", file=sys.stderr, flush=True)
    return rec.result(convert.to_numpy(jax.tree.map(place.to_host, state), example, form), train_seconds,
                      compile_seconds)
