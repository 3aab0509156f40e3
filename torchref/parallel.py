"""Data parallel training with torch.nn.parallel.DistributedDataParallel:
`training.fit(..., devices=N)` lands here. Twin: jaxport/parallel.py (jax.sharding).

The rule, the same in both twins: each step's global batch is the one-device batch
(the last partial batch included), padded to a multiple of N and cut into N equal
contiguous shards, shard i on rank i; padding rows weigh nothing, so here they are
simply left out (a rank may get fewer rows, or none). The loss is the mean over the
WHOLE global batch, sum(loss) / rows, not a mean of per-rank means. DDP all-reduces
the gradients and divides by N, so each rank back-propagates
    (sum of its per-sample losses) x N / (rows of the global batch)
and the average of the ranks' gradients is the one-device gradient.

Processes: on one machine, N processes started with torch.multiprocessing (spawn),
rendezvous over a free localhost port, gloo on CPU (nccl on GPUs); rank 0's result
comes back through a queue, and every child is terminated in `finally`, also on an
error in any rank or Ctrl-C; and a rank dies with its parent when nothing in the parent
runs any more (SIGKILL, the OOM killer; portcore/lifeline.py). Launched by torchrun
(RANK and WORLD_SIZE set), each process is one rank, joins through env:// and trains
in place.
"""
from __future__ import annotations

import os
import pickle
import queue as queue_module
import socket
import sys
import time
import traceback

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from portcore import lifeline, registry, schedule, specs

# How long the parent waits for a rank's first word before it checks they still live.
POLL_S = 0.2


class WorkerError(RuntimeError):
    """A rank died without saying why (killed, or crashed in C++)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shard_size(batch_size: int, devices: int) -> int:
    return -(-batch_size // devices)


def rank_weight(world: int, batch_rows: int, rank_rows: int) -> float:
    """The factor on a rank's summed loss. DDP divides the all-reduced gradients by
    `world`, so world / batch_rows makes their average the gradient of the global mean
    (rank_rows plays no part: that is the point)."""
    return world / batch_rows


def _train(rank, world, example, params, x, y, order, config, dtype, device, form, frames,
           progress, stop_on_divergence, chunk_epochs, opt_state=None, checkpoint=None, rank_weight=rank_weight,
           parent=None) -> specs.FitResult:
    """This rank's part of the run; every rank returns the whole run's result (the
    losses are all-reduced once per chunk, the parameters are DDP's replicas)."""
    from torchref import example_module, optim
    from torchref.convert import load_numpy, named_parameters, to_numpy
    from torchref.state import opt_state_from_numpy, opt_state_to_numpy
    ex = example_module(example)
    local = int(os.environ.get("LOCAL_RANK", rank))     # torchrun: this machine's rank
    dev = f"cuda:{local % max(1, torch.cuda.device_count())}" if device == "gpu" else "cpu"
    # training.build_model's two lines: training imports this module (fit, devices > 1).
    model = load_numpy(ex.build_model(form, dtype=dtype).to(dev), params, example, form)
    ddp = DistributedDataParallel(model, device_ids=[dev] if device == "gpu" else None)
    data = ex.Dataset(x, y, dtype=dtype, label_dtype=registry.get(example).label_dtype(dtype))
    data.x, data.y = data.x.to(dev), data.y.to(dev)
    optimizer = optim.make_optimizer(config, model.parameters())
    named = named_parameters(model, example, form)
    opt_state_from_numpy(optimizer, named, opt_state or {})
    summed = type(ex.loss_fn)(reduction="sum")         # MSELoss / BCELoss, summed over rows
    epochs, n = schedule.order_size(order)
    b, s = config.batch_size, shard_size(config.batch_size, world)
    rec = schedule.Recorder(epochs, specs.steps_per_epoch(n, b))
    start = time.perf_counter()
    with tqdm(total=epochs, desc=f"torch {example} x{world}", unit="epoch", leave=False,
              disable=not progress or rank != 0, file=sys.stderr) as bar:
        for chunk in schedule.order_chunks(order, chunk_epochs or schedule.chunk_epochs(n, b),
                                           checkpoint and checkpoint.every):
            keep, sums, rows, frame_list = set(rec.rows(rec.epochs_run, len(chunk)).tolist()), [], [], []
            for e, row in enumerate(chunk):
                if frames and e in keep:
                    with torch.no_grad():
                        frame_list.append(ex.frame(model, data.x).cpu().numpy())
                if parent is not None:      # the parent check, for systems without prctl
                    lifeline.exit_if_orphaned(parent)
                for first in range(0, n, b):
                    batch = row[first:first + b]
                    mine = torch.as_tensor(batch[rank * s:(rank + 1) * s], device=dev)
                    part = summed(ddp(data.x[mine]), data.y[mine])
                    optimizer.zero_grad()
                    (part * rank_weight(world, len(batch), len(mine))).backward()
                    optimizer.step()
                    sums.append(part.detach())
                    rows.append(len(batch))
                bar.update()
            sums = torch.stack(sums)
            dist.all_reduce(sums)                                # one collective per chunk
            losses = (sums / torch.as_tensor(rows, dtype=sums.dtype, device=dev)).cpu().numpy()
            rec.add(losses.reshape(len(chunk), -1), np.stack(frame_list) if frame_list else None)
            if checkpoint is not None and rank == 0 and checkpoint.due(order, rec.epochs_run):
                checkpoint.write(order, rec.epochs_run, to_numpy(model, example, form),
                                 opt_state_to_numpy(optimizer, named))
            if stop_on_divergence and rec.nonfinite_loss_step is not None:
                break
    return rec.result(to_numpy(model, example, form), time.perf_counter() - start)


def _worker(rank, world, port, job, results, parent):
    """One spawned rank, started by lifeline.run_child (so it dies with its parent, pid
    `parent`: a SIGKILLed parent runs no `finally`): always leaves the process group,
    and tells the parent how it ended (rank 0 its result, any rank its exception)."""
    torch.set_num_threads(1)           # N ranks on a few cores: one thread each
    try:
        dist.init_process_group("nccl" if job["device"] == "gpu" else "gloo", rank=rank, world_size=world,
                                init_method=f"tcp://127.0.0.1:{port}")
        result = _train(rank, world, **job, parent=parent)
        dist.barrier()                 # no rank tears down gloo while another still talks
        if rank == 0:
            results.put(("ok", rank, result, ""))
    except BaseException as e:         # noqa: BLE001 - reported to the parent, which re-raises
        try:
            results.put(("error", rank, e, traceback.format_exc()))
        except Exception:              # an exception that does not pickle: its text
            results.put(("error", rank, RuntimeError(f"{type(e).__name__}: {e}"), traceback.format_exc()))
        raise SystemExit(1)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def fit(example, params, x, y, order, config, *, devices, dtype="float32", device="cpu",
        form="class", frames=False, progress=False, stop_on_divergence=False,
        chunk_epochs=None, opt_state=None, checkpoint=None) -> specs.FitResult:
    """training.fit on `devices` DDP ranks (rank 0 writes the checkpoints). Under torchrun (RANK, WORLD_SIZE set) this
    process is one rank; otherwise it spawns `devices` ranks on this machine."""
    job = dict(example=example, params={k: np.asarray(v) for k, v in params.items()},
               x=np.asarray(x), y=np.asarray(y), order=order, config=config, dtype=dtype,
               device=device, form=form, frames=frames, progress=progress,
               stop_on_divergence=stop_on_divergence, chunk_epochs=chunk_epochs,
               opt_state=opt_state, checkpoint=checkpoint, rank_weight=rank_weight)       # by reference: a test can plant another
    if device == "gpu" and torch.cuda.device_count() < devices:
        raise ValueError(f"--devices {devices}: torch sees {torch.cuda.device_count()} CUDA GPU(s)")
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return _fit_launched(devices, job)
    ctx = mp.get_context("spawn")
    # Ranks killed on Ctrl-C or an error leave a semaphore that multiprocessing's resource
    # tracker cleans up anyway; its warning would be a second stderr line after our one.
    # The tracker process takes its warning filters from sys.warnoptions when it starts.
    if "ignore:resource_tracker:UserWarning" not in sys.warnoptions:
        sys.warnoptions.append("ignore:resource_tracker:UserWarning")
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=lifeline.run_child, daemon=True,
                         args=(os.getpid(), __name__, "_worker", pickle.dumps((rank, devices, port, job)),
                               results, os.getpid()))
             for rank in range(devices)]
    try:
        for p in procs:
            p.start()
        while True:
            try:
                status, rank, payload, tb = results.get(timeout=POLL_S)
            except queue_module.Empty:
                dead = [(i, p.exitcode) for i, p in enumerate(procs) if p.exitcode not in (None, 0)]
                if dead and results.empty():
                    raise WorkerError(f"DDP rank {dead[0][0]} exited with status {dead[0][1]}") from None
                continue
            if status == "ok":
                for p in procs:
                    p.join()
                return payload
            payload.add_note(f"(in DDP rank {rank} of {devices})\n{tb}")
            raise payload
    finally:
        for p in procs:                # on any error or Ctrl-C: no rank outlives us
            if p.is_alive():
                p.terminate()
        for p in procs:
            if p.pid is not None:
                p.join(5)
                if p.is_alive():
                    p.kill()
                    p.join()
        results.close()


def _fit_launched(devices, job) -> specs.FitResult:
    """One rank of a torchrun launch (env:// rendezvous: MASTER_ADDR, MASTER_PORT, RANK,
    WORLD_SIZE from the launcher); every rank returns the same result."""
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    if world != devices:
        raise ValueError(f"--devices {devices} but the launcher started WORLD_SIZE={world} processes")
    torch.set_num_threads(1)
    dist.init_process_group("nccl" if job["device"] == "gpu" else "gloo", init_method="env://")
    try:
        return _train(rank, world, **job)
    finally:
        dist.destroy_process_group()
