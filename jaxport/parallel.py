"""Data parallel training with jax.sharding: `training.fit(..., devices=N)` lands here.
Twin: torchref/parallel.py (torch DistributedDataParallel over gloo).

The rule, the same in both twins: each step's global batch is the one-device batch
(the last partial batch included), padded with zero-weight rows to a multiple of N and
cut into N equal contiguous shards, shard i on device i. The loss is the weighted mean
over the WHOLE global batch, sum(weight * loss) / sum(weight), and the gradient is its
gradient: not a mean of per-shard means, which would weigh a ragged batch's rows
unequally and differ from one device.

How: a Mesh of N devices with one axis "data"; parameters, optimizer state and the data
are replicated; each batch's gathered rows (and weights) are constrained to
NamedSharding(mesh, P("data")), so XLA's SPMD partitioner runs each device's rows on
that device and inserts the all-reduces of the loss's sums and of the gradients. The
loss function is the one-device one, so the global weighted mean holds by construction.
The whole run stays one compiled program per chunk (portcore/schedule.py).

On a CPU, N devices need XLA_FLAGS=--xla_force_host_platform_device_count=N before JAX
starts (the CLI sets it). Several processes (jax.distributed.initialize) see one global
list of devices: the mesh spans them, and every input is built with
make_array_from_callback, which only touches this process's devices.
"""
from __future__ import annotations

import os
import sys
import time

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm import tqdm

from portcore import schedule, specs
from jaxport import model_state
from jaxport.convert import to_numpy
from jaxport.numerics import jax_dtype

compile_count = 0
_programs = {}


def initialize_from_env(device: str = "cpu") -> int:
    """Join a multi-process run when JAX_COORDINATOR_ADDRESS (host:port of process 0),
    JAXPORT_NUM_PROCESSES and JAXPORT_PROCESS_ID are set; returns the number of
    processes (1 without them). On CPUs the processes' collectives go over gloo. Must
    run before JAX initialises its backends."""
    if not os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return 1
    try:
        processes, process_id = int(os.environ["JAXPORT_NUM_PROCESSES"]), int(os.environ["JAXPORT_PROCESS_ID"])
    except (KeyError, ValueError):
        raise DevicesError("JAX_COORDINATOR_ADDRESS is set: JAXPORT_NUM_PROCESSES and "
                           "JAXPORT_PROCESS_ID must be integers too") from None
    if device == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if not jax.distributed.is_initialized():
        jax.distributed.initialize(os.environ["JAX_COORDINATOR_ADDRESS"], num_processes=processes,
                                   process_id=process_id)
    return processes


class DevicesError(ValueError):
    """More devices asked for than JAX sees."""


def mesh(devices: int, device: str = "cpu") -> Mesh:
    """The first `devices` devices of the platform (all processes' in a multi-process run)."""
    platform = {"cpu": "cpu", "gpu": "gpu"}[device]
    try:
        found = jax.devices(platform)
    except RuntimeError:
        found = []
    if len(found) < devices:
        hint = (" (on a CPU, set XLA_FLAGS=--xla_force_host_platform_device_count=N before JAX starts)"
                if device == "cpu" else "")
        raise DevicesError(f"--devices {devices}: JAX sees {len(found)} {platform} device(s){hint}")
    return Mesh(np.array(found[:devices]), ("data",))


def shard_size(batch_size: int, devices: int) -> int:
    """Rows per device: the batch padded up to a multiple of `devices`, divided."""
    return -(-batch_size // devices)


def sharded_indices(order: np.ndarray, batch_size: int, devices: int):
    """training.batch_indices, each batch padded with index 0 and weight 0 up to
    devices x shard_size rows. Weights are None only when no row is padding."""
    from jaxport.training import batch_indices
    idx, weight = batch_indices(order, batch_size)       # (epochs, steps, B), (steps, B, 1)
    pad = devices * shard_size(batch_size, devices) - batch_size
    if pad == 0:
        return idx, weight
    steps = idx.shape[1]
    weight = np.ones((steps, batch_size, 1), bool) if weight is None else weight
    idx = np.concatenate([idx, np.zeros(idx.shape[:2] + (pad,), idx.dtype)], axis=2)
    return idx, np.concatenate([weight, np.zeros((steps, pad, 1), bool)], axis=1)


def put(array, sharding) -> jax.Array:
    """A global array from a host array every process holds whole; each process fills its
    own devices' pieces only (device_put cannot reach another process's devices)."""
    array = np.asarray(array)
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def host(array) -> np.ndarray:
    """A replicated output as numpy, from this process's first piece."""
    return np.asarray(array.addressable_data(0))


def fit(example, params, x, y, order, config, *, devices, dtype="float32", device="cpu",
        form="class", frames=False, progress=False, stop_on_divergence=False,
        chunk_epochs=None) -> specs.FitResult:
    """training.fit on `devices` devices (called by it, inside its dtype scope)."""
    global compile_count
    from jaxport import training
    mesh_ = mesh(devices, device)
    replicated, rows = NamedSharding(mesh_, P()), NamedSharding(mesh_, P("data"))
    idx_sharding, weight_sharding = NamedSharding(mesh_, P(None, None, "data")), NamedSharding(mesh_, P(None, "data"))
    epochs, n = schedule.order_size(order)
    size = chunk_epochs or schedule.chunk_epochs(n, config.batch_size)
    graphdef, state = training._split(example, params, dtype, device, form)
    opt_state = training.make_optimizer(config).init(model_state.split(state)[0])
    state, opt_state = (jax.tree.map(lambda a: put(a, replicated), tree) for tree in (state, opt_state))
    x_, y_ = (put(np.asarray(a, dtype=jax_dtype(dtype)), replicated) for a in (x, y))
    steps = specs.steps_per_epoch(n, config.batch_size)
    rec = schedule.Recorder(epochs, steps)

    def place(chunk):
        idx, weight = sharded_indices(np.asarray(chunk), config.batch_size, devices)
        return put(idx, idx_sharding), None if weight is None else put(weight, weight_sharding)

    compile_seconds, programs = 0.0, {}
    for count in sorted({min(size, epochs), epochs % size if epochs > size else 0} - {0}):
        key = (example, graphdef, config.replace(shuffle=False), frames, dtype, device, np.shape(x),
               np.shape(y), (count, steps, config.batch_size), tuple(d.id for d in mesh_.devices.flat))
        if key not in _programs:
            if progress:
                print(f"jax {example}: compiling a {count}-epoch program for {devices} devices ...",
                      file=sys.stderr, flush=True)
            start = time.perf_counter()
            program = training._train_program(example, graphdef, config, frames, batch_sharding=rows)
            args = (state, opt_state, x_, y_, *place(np.zeros((count, n), np.int64)))
            # Outputs replicated: every process can read them from its own devices.
            _programs[key] = jax.jit(program, out_shardings=replicated).lower(*args).compile()
            compile_count += 1
            compile_seconds += time.perf_counter() - start
        programs[count] = _programs[key]
    train_seconds, host_idx = 0.0, None
    with tqdm(total=epochs, desc=f"jax {example} x{devices}", unit="epoch", disable=not progress,
              leave=False, file=sys.stderr) as bar:
        for chunk in schedule.order_chunks(order, size):
            if chunk is not host_idx:
                idx_, weight_ = place(chunk)
                host_idx = chunk
            start = time.perf_counter()
            state, opt_state, losses, frame_stack = jax.block_until_ready(
                programs[len(chunk)](state, opt_state, x_, y_, idx_, weight_))
            train_seconds += time.perf_counter() - start
            kept = rec.rows(rec.epochs_run, len(chunk))
            rec.add(host(losses), host(frame_stack)[kept] if frames else None)
            bar.update(len(chunk))
            if stop_on_divergence and rec.nonfinite_loss_step is not None:
                break
    if progress:
        print(f"jax {example}: compiled in {compile_seconds:.2f} s, trained on {devices} devices in "
              f"{train_seconds:.3f} s", file=sys.stderr, flush=True)
    params_out = to_numpy(jax.tree.map(host, state), example, form)
    return rec.result(params_out, train_seconds, compile_seconds)
