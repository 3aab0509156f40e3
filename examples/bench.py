"""`python -m examples bench`: how long each backend takes to train the examples.

For every trainable example, at the tutorial's configuration and at a larger one: the
steady-state training time of torch eager (torchref.fit), of the same loop with the
model and the optimizer step under torch.compile, and of jaxport (the whole run as one
XLA program), beside the matmul floor: the run's matmul FLOPs at this machine's peak,
measured in the same process so that contention or clock changes touch both, and at one
core's peak (a pinned child process: XLA:CPU runs these loops on one thread). Speed is
reported here, never asserted in a test. Imports the backends lazily (the CLI imports
this module to build its parser).
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

from portcore import registry, specs
from examples.bench_common import SIZES, align, matmul_flops, say, workload
from examples.bench_timing import one_core_peak_flops, peak_flops, time_jax, time_torch_compile, time_torch_eager
from examples.usage import DEVICES_HELP
from portcore.weights import atomic_write



def configure(p) -> None:
    p.add_argument("names", nargs="*", metavar="NAME",
                   help=f"trainable examples (default: all of {', '.join(registry.TRAINABLE)})")
    p.add_argument("--dtype", choices=specs.DTYPES, default="float32")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median)")
    p.add_argument("--sizes", default=",".join(SIZES), help="comma-separated: tutorial,large")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--write-tables", action="store_true",
                   help="write the tables into README.md and docs/speed.md (between their markers), "
                        "only if the load average stayed below 0.75 x the cores (examples/bench_tables.py)")
    p.add_argument("--force", action="store_true", help="with --write-tables: write them on a busy machine too, "
                                                        "saying the load")
    from examples.bench_parallel import devices_list
    p.add_argument("--devices", type=devices_list, default=(1,), metavar="N[,N...]",
                   help="with counts other than 1: time data parallel jaxport and torch DDP on each "
                        "(examples/bench_parallel.py) instead of the backends' table. " + DEVICES_HELP)
    # torch's default, a thread per core, gains nothing on these small matmuls and, when
    # another process takes a core, stalls at every barrier: the network's tutorial run
    # went from 0.8 s to 17-46 s on a shared 2-core machine. One thread is steady.
    p.add_argument("--torch-threads", type=int, default=1, metavar="N",
                   help="torch's intra-op threads (default 1; 0: torch's own choice)")


def device_name(device: str) -> str:
    if device == "gpu":
        import torch
        return torch.cuda.get_device_name(0)
    try:                                  # platform.processor() is often empty on Linux
        with open("/proc/cpuinfo") as f:
            model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} cores"


def versions() -> dict:
    import flax, jax, jaxlib, optax, torch
    return {m.__name__: m.__version__ for m in (torch, jax, jaxlib, flax, optax, np)}


def _fail(message: str) -> int:
    print(f"error: bench: {message}", file=sys.stderr)
    return 2


def command(args) -> int:
    names = list(args.names) or list(registry.TRAINABLE)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [n for n in names if n not in registry.TRAINABLE]
    if unknown:
        return _fail(f"unknown example {unknown[0]!r} (trainable: {', '.join(registry.TRAINABLE)})")
    if not sizes or any(s not in SIZES for s in sizes):
        return _fail(f"--sizes {args.sizes!r}: use a comma-separated subset of {','.join(SIZES)}")
    if args.repeats < 1 or args.torch_threads < 0:
        return _fail("--repeats must be at least 1 and --torch-threads 0 or more")
    if args.json:       # checked now: the measurements take minutes
        from portcore.weights import check_writable
        try:
            check_writable(args.json)
        except OSError as e:
            return _fail(f"--json {args.json}: cannot write there ({e.strerror or e})")
    if args.write_tables:
        from examples import bench_tables
        problem = bench_tables.check_files()
        if problem:
            return _fail(problem)
        if bench_tables.load() > bench_tables.busy_limit() and not args.force:
            return _fail(f"--write-tables: the load average is {bench_tables.load():.1f} (over "
                         f"{bench_tables.busy_limit():.1f} on this machine): measure on a quiet machine, or pass --force")
    import torch
    from jaxport import numerics as jnum
    from torchref import numerics as tnum
    try:
        tnum.torch_device(args.device), jnum.jax_device(args.device)
    except (tnum.NoGPUError, jnum.NoGPUError) as e:
        return _fail(str(e))
    if args.device == "gpu":                  # full float32 on both sides, like the floor's matmul
        tnum.pin_numerics(), jnum.pin_numerics()
    load = os.getloadavg()[0]     # other processes distort every timing: say how busy it was
    if args.devices != (1,):
        from examples import bench_parallel
        error = bench_parallel.check(args)
        if error:
            return _fail(error)
        torch.set_num_threads(1)              # as each DDP rank
        report = {"results": bench_parallel.measure(names, sizes, args), "device": device_name(args.device),
                  "versions": versions(), "dtype": args.dtype, "device_kind": args.device,
                  "repeats": args.repeats, "load_average": [load, os.getloadavg()[0]]}
        print(bench_parallel.table(report))
        if args.json:
            atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2) + "\n"))
        return 0
    # The peak with torch's own threads, before and after (the better of both): the
    # machine's, whatever --torch-threads gives the runs, and no one busy moment's.
    say(f"measuring the {args.dtype} matmul peak on {args.device} ...")
    peak, threads = peak_flops(args.dtype, args.device), torch.get_num_threads()
    torch.set_num_threads(args.torch_threads or threads)
    try:
        results = measure(names, sizes, args)
    finally:
        torch.set_num_threads(threads)
    peak = max(peak, peak_flops(args.dtype, args.device))
    peak_1 = one_core_peak_flops(args.dtype) if args.device == "cpu" else None
    for r in results:
        r["floor_s"] = r["flops"] / peak
        r["floor_1core_s"] = r["flops"] / peak_1 if peak_1 else None
    report = {"results": results, "device": device_name(args.device), "versions": versions(),
              "dtype": args.dtype, "device_kind": args.device, "repeats": args.repeats,
              "peak_gflops": peak / 1e9, "peak_1core_gflops": peak_1 and peak_1 / 1e9,
              "torch_threads": args.torch_threads or threads,
              "load_average": [load, os.getloadavg()[0]]}
    print(table(report))
    if args.json:
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2) + "\n"))
    if args.write_tables:
        from examples import bench_tables
        problem = bench_tables.write(report, args.force)
        if problem:
            return _fail(problem)
        say("tables written into README.md and docs/speed.md")
    return 0


def measure(names, sizes, args) -> list[dict]:
    results = []
    for name in names:
        params = registry.shared_init(name)
        for size in sizes:
            x, y, order, config = workload(name, size)
            run = (name, params, x, y, order, config, args.dtype, args.device, args.repeats)
            steps = len(order) * specs.steps_per_epoch(len(x), config.batch_size)
            say(f"{name} {size} ({steps} steps): torch eager ...")
            before = os.getloadavg()[0]
            eager = time_torch_eager(*run)
            compiled = compile_s = None
            if not args.no_compile:
                say(f"{name} {size}: torch.compile (compiling can take minutes) ...")
                compiled, compile_s = time_torch_compile(*run)
            say(f"{name} {size}: jaxport ...")
            jax_s, jax_compile_s = time_jax(*run)
            results.append(dict(example=name, size=size, steps=steps, n=len(x), epochs=config.epochs,
                                batch_size=config.batch_size, torch_eager_s=eager,
                                torch_compile_s=compiled, torch_compile_compile_s=compile_s,
                                jax_s=jax_s, jax_compile_s=jax_compile_s,
                                flops=matmul_flops(name, len(order) * len(x)),
                                load=[before, os.getloadavg()[0]]))
    return results


def _ratio(a, b):
    return f"{a / b:.1f}x" if a is not None and b else "-"


def beyond_one_core(r: dict, speedup: float) -> str:
    """Said when a speed-up target asks jaxport for less time than its matmuls take at
    one core's peak: XLA:CPU runs the compiled loop's ops on one thread, so that target
    needs the matmuls spread over cores (docs/speed.md, "What one core allows")."""
    needed, floor = r["torch_eager_s"] / speedup, r.get("floor_1core_s")
    if floor is None or needed >= floor:
        return ""
    return (f"; {speedup:g}x needs jax <= {needed:.3g} s, under the matmuls' {floor:.3g} s at one core's peak: "
            f"beyond one core")


def table(report: dict) -> str:
    """The measurements and their ratios: eager/jax is jaxport's speed-up."""
    def sec(s, c=None):
        return "-" if s is None else f"{s:.3g}" + ("" if c is None else f" ({c:.2g})")
    head = ("example", "size", "steps", "torch eager s", "torch.compile s", "jax s", "floor s",
            "eager/jax", "jax/floor", "jax/1-core", "compile/jax")
    rows = [head] + [(r["example"], r["size"], str(r["steps"]), sec(r["torch_eager_s"]),
                      sec(r["torch_compile_s"], r["torch_compile_compile_s"]),
                      sec(r["jax_s"], r["jax_compile_s"]), sec(r["floor_s"]),
                      _ratio(r["torch_eager_s"], r["jax_s"]), _ratio(r["jax_s"], r["floor_s"]),
                      _ratio(r["jax_s"], r.get("floor_1core_s")),
                      _ratio(r["torch_compile_s"], r["jax_s"])) for r in report["results"]]
    lines = align(rows, left=2)
    one_core = report.get("peak_1core_gflops")
    lines.append(f"{report['dtype']} on {report['device']}; peak {report['peak_gflops']:.1f} GFLOP/s"
                 + (f" (one core {one_core:.1f}; jax/1-core: jax over the FLOPs at that)" if one_core else "") + "; "
                 f"median of {report['repeats']}; torch threads {report['torch_threads']}; "
                 f"(n): seconds spent compiling; load average {report['load_average'][0]:.1f} at start")
    for r in report["results"]:
        target = registry.get(r["example"]).speed_target        # (eager/jax at least, jax/floor at most)
        if target and (r["size"], report["dtype"], report["device_kind"]) == ("tutorial", "float32", "cpu"):
            speedup, floor = r["torch_eager_s"] / r["jax_s"], r["jax_s"] / r["floor_s"]
            met = [f"eager/jax {speedup:.1f}x (>= {target[0]:g}x: {'met' if speedup >= target[0] else 'missed'})"]
            if target[1] is not None:
                met.append(f"jax/floor {floor:.1f}x (<= {target[1]:g}x: {'met' if floor <= target[1] else 'missed'})")
            lines.append(f"targets, {r['example']}: " + ", ".join(met) + beyond_one_core(r, target[0]))
    return "\n".join(lines)
