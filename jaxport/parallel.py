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

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxport.programs import DEFAULT, Placement, batch_indices, run_fit
from jaxport.state import host_dtype
from portcore import specs


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
        chunk_epochs=None, opt_state=None, checkpoint=None) -> specs.FitResult:
    """training.fit on `devices` devices (called by it, inside its dtype scope): the same
    chunk loop (programs.run_fit) with every array placed on the mesh."""
    mesh_ = mesh(devices, device)
    replicated, rows = NamedSharding(mesh_, P()), NamedSharding(mesh_, P("data"))
    idx_sharding, weight_sharding = NamedSharding(mesh_, P(None, None, "data")), NamedSharding(mesh_, P(None, "data"))

    def put_batches(chunk):
        idx, weight = sharded_indices(np.asarray(chunk), config.batch_size, devices)
        return put(idx, idx_sharding), None if weight is None else put(weight, weight_sharding)
    place = Placement(
        put_tree=lambda tree: jax.tree.map(lambda a: put(a, replicated), tree),
        put_data=lambda a, dtype: put(np.asarray(a, dtype=host_dtype(dtype)), replicated),
        put_batches=put_batches, to_host=host,
        # Outputs replicated: every process can read them from its own devices.
        jit=lambda run: jax.jit(run, out_shardings=replicated),
        key=(tuple(d.id for d in mesh_.devices.flat),), label=f" on {devices} devices")
    return run_fit(DEFAULT, example, params, x, y, order, config, place, dtype=dtype, device=device,
                   form=form, frames=frames, progress=progress, stop_on_divergence=stop_on_divergence,
                   chunk_epochs=chunk_epochs, batch_sharding=rows, opt_state=opt_state,
                   checkpoint=checkpoint)
