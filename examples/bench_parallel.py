"""`bench --devices 1,2,4`: data parallel speed, jaxport (jax.sharding) and torch DDP.

For each N: the training time per step of the N-device run (steady state: jaxport after
its compile; torch DDP's time inside rank 0, after spawn and rendezvous), and the
communication share, measured as

    share = (t_N - t_shard) / t_N

where t_shard is the same number of steps on ONE device with one shard's rows
(batch ceil(B / N)): what each device computes, without any collective. The rest of t_N
is what running N devices costs: collectives, synchronisation, and on a CPU with fewer
cores than devices the devices' contention for cores, which this cannot tell apart
from communication (say so when reporting it). Speed is reported, never asserted.
"""
from __future__ import annotations

import argparse
import statistics

import numpy as np

from examples.bench_common import align, say, workload
from portcore import registry, specs


def devices_list(text: str) -> tuple[int, ...]:
    """'4' or '1,2,4' -> (1, 2, 4) (for argparse)."""
    try:
        values = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma-separated list of device counts, got {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"device counts must be at least 1, got {text!r}")
    return values


def check(args) -> str | None:
    """An error message, before any measurement, or None."""
    from examples.commands import check_devices
    from examples.usage import UsageError
    from examples.bench_common import LARGE_BATCH
    batch = min([LARGE_BATCH] + [registry.get(n).defaults.batch_size for n in args.names or registry.TRAINABLE])
    for n in args.devices:
        if n > batch:
            return f"--devices {n}: more devices than rows in a batch ({batch}); every device needs at least one"
        try:
            check_devices("jax", args.device, n)
            check_devices("torch", args.device, n)
        except UsageError as e:
            return str(e)
    return None


def _time(fit, example, params, x, y, order, config, dtype, device, repeats, devices) -> float:
    """Median seconds of the runs' training (one warm-up run first)."""
    kw = dict(dtype=dtype, device=device, devices=devices)
    fit(example, params, x, y, order, config, **kw)
    return statistics.median(fit(example, params, x, y, order, config, **kw).train_seconds
                             for _ in range(repeats))


def shard_workload(x, y, config, order, devices: int):
    """One device's part of an N-device run: the same steps, batches of one shard."""
    steps = specs.steps_per_epoch(len(x), config.batch_size)
    shard = -(-config.batch_size // devices)
    rows = min(len(x), steps * shard)
    sub = specs.batch_order(rows, len(order), config.shuffle)
    return x[:rows], y[:rows], sub, config.replace(batch_size=shard)


def measure(names, sizes, args) -> list[dict]:
    from jaxport import training as jt
    from torchref import training as tt
    results = []
    for name in names:
        params = registry.shared_init(name)
        for size in sizes:
            x, y, order, config = workload(name, size)
            steps = len(order) * specs.steps_per_epoch(len(x), config.batch_size)
            for backend, fit in (("jax", jt.fit), ("torch", tt.fit)):
                for n in args.devices:
                    say(f"{name} {size} ({steps} steps): {backend} on {n} device(s) ...")
                    t_n = _time(fit, name, params, x, y, order, config, args.dtype, args.device,
                                args.repeats, n) / steps
                    t_shard = None
                    if n > 1:
                        xs, ys, os_, cs = shard_workload(x, y, config, order, n)
                        t_shard = _time(fit, name, params, xs, ys, os_, cs, args.dtype, args.device,
                                        args.repeats, 1) / steps
                    results.append(dict(example=name, size=size, steps=steps, backend=backend,
                                        devices=n, batch_size=config.batch_size, step_s=t_n,
                                        shard_step_s=t_shard,
                                        comm_share=None if t_shard is None else max(0.0, 1 - t_shard / t_n)))
    return results


def table(report: dict) -> str:
    head = ("example", "size", "backend", "N", "s/step", "1-device shard s/step", "comm share", "vs N=1")
    base = {(r["example"], r["size"], r["backend"]): r["step_s"] for r in report["results"] if r["devices"] == 1}
    rows = [head]
    for r in report["results"]:
        one = base.get((r["example"], r["size"], r["backend"]))
        rows.append((r["example"], r["size"], r["backend"], str(r["devices"]), f"{r['step_s']:.3g}",
                     "-" if r["shard_step_s"] is None else f"{r['shard_step_s']:.3g}",
                     "-" if r["comm_share"] is None else f"{100 * r['comm_share']:.0f}%",
                     f"{one / r['step_s']:.2f}x" if one else "-"))
    lines = align(rows, left=3)
    lines.append(f"{report['dtype']} on {report['device']}; median of {report['repeats']}; torch threads "
                 f"1 per rank; load average {report['load_average'][0]:.1f} at start; vs N=1: speed-up "
                 f"(below 1x: slower); comm share: 1 - (one shard on 1 device) / (N-device step)")
    return "\n".join(lines)
