"""`python -m examples bench`: how long each backend takes to train the examples.

For every trainable example, at the tutorial's configuration and at a larger one: the
steady-state training time of torch eager (torchref.fit), of the same loop with the
model and the optimizer step under torch.compile, and of jaxport (the whole run as one
XLA program), beside the matmul floor: the run's matmul FLOPs at this machine's peak,
measured in the same process so that contention or clock changes touch both. Speed is
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
from portcore.weights import atomic_write

SIZES = ("tutorial", "large")
# Large: 10,000 points in batches of 100, so 100 steps an epoch instead of the
# tutorial's 1; 20 epochs (2,000 steps) keep a torch eager run to a few seconds.
LARGE_N, LARGE_BATCH, LARGE_EPOCHS = 10_000, 100, 20
PEAK_N = 2048                  # the peak matmul, (PEAK_N, PEAK_N) @ (PEAK_N, PEAK_N)
COMPILE_BUDGET_S = 300         # inductor on CPU builds C++: give up (null) past this
# The targets, for neural_network's tutorial run on CPU in float32.
TARGET_SPEEDUP, TARGET_FLOOR = 8.0, 3.0


def configure(p) -> None:
    p.add_argument("names", nargs="*", metavar="NAME",
                   help=f"trainable examples (default: all of {', '.join(registry.TRAINABLE)})")
    p.add_argument("--dtype", choices=specs.DTYPES, default="float32")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median)")
    p.add_argument("--sizes", default=",".join(SIZES), help="comma-separated: tutorial,large")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    from examples.bench_parallel import devices_list
    from examples.cli import DEVICES_HELP
    p.add_argument("--devices", type=devices_list, default=(1,), metavar="N[,N...]",
                   help="with counts other than 1: time data parallel jaxport and torch DDP on each "
                        "(examples/bench_parallel.py) instead of the backends' table. " + DEVICES_HELP)
    # torch's default, a thread per core, gains nothing on these small matmuls and, when
    # another process takes a core, stalls at every barrier: the network's tutorial run
    # went from 0.8 s to 17-46 s on a shared 2-core machine. One thread is steady.
    p.add_argument("--torch-threads", type=int, default=1, metavar="N",
                   help="torch's intra-op threads (default 1; 0: torch's own choice)")


def workload(example: str, size: str, seed: int = specs.DEFAULT_SEED):
    """(x, y, order, config) of one run, in numpy, so both backends get the same bits."""
    x, y = registry.make_data(example, seed)
    config = registry.get(example).defaults
    if size == "large":
        # The tutorial's points tiled to LARGE_N and shuffled once, so that every batch
        # is drawn from the whole data set like the tutorial's single full batch.
        rows = np.random.default_rng([seed, 99]).permutation(np.resize(np.arange(len(x)), LARGE_N))
        x, y = x[rows], y[rows]
        config = config.replace(epochs=LARGE_EPOCHS, batch_size=LARGE_BATCH)
    return x, y, specs.batch_order(len(x), config.epochs, config.shuffle, seed), config


def matmul_flops(example: str, samples: int) -> int:
    """The layer kinds' forward FLOPs per sample; backward about twice the forward."""
    return 3 * samples * registry.get(example).flops()


def _elapsed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def peak_flops(dtype: str, device: str, repeats: int = 3) -> float:
    """FLOP/s of the best large matmul: numpy's and torch's BLAS on CPU, torch on GPU."""
    import torch
    from torchref.numerics import torch_device, torch_dtype
    if device == "cpu":
        a = np.random.default_rng(0).random((PEAK_N, PEAK_N)).astype(dtype)
        t = torch.from_numpy(a)
        fns = (lambda: a @ a, lambda: t @ t)
    else:
        t = torch.rand(PEAK_N, PEAK_N, dtype=torch_dtype(dtype), device=torch_device(device))
        fns = (lambda: (t @ t, torch.cuda.synchronize()),)
    best = float("inf")
    for fn in fns:
        fn()                                                 # warm-up: threads, pages, clocks
        best = min(best, *(_elapsed(fn) for _ in range(repeats)))
    return 2 * PEAK_N ** 3 / best


def time_torch_eager(example, params, x, y, order, config, dtype, device, repeats):
    from torchref import training
    training.fit(example, params, x, y, order[:1], config, dtype=dtype, device=device)  # warm-up
    return statistics.median(training.fit(example, params, x, y, order, config, dtype=dtype,
                                          device=device).train_seconds for _ in range(repeats))


@contextlib.contextmanager
def _time_limit(seconds: int):
    """TimeoutError after `seconds` via SIGALRM, where the main thread may own the alarm."""
    if not (hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None)):
        yield
        return

    def expire(signum, frame):
        raise TimeoutError(f"compiling took over {seconds} s")
    signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)


def time_torch_compile(example, params, x, y, order, config, dtype, device, repeats):
    """(steady seconds, compile seconds) of torchref's loop with torch.compile'd model
    and optimizer step (PyTorch's recipe for compiling both), or (None, None)."""
    import torch
    from torch.utils.data import BatchSampler, DataLoader
    from torchref import example_module, training
    from torchref.convert import load_numpy

    torch._dynamo.reset()      # fresh guards: otherwise earlier runs count to the recompile limit
    ex = example_module(example)
    model = training.build_model(example, params, dtype=dtype, device=device)
    data = ex.Dataset(x, y, dtype=dtype, device=device)
    optimizer = training.make_optimizer(config, model.parameters())
    forward, opt_step = torch.compile(model), torch.compile(optimizer.step)

    def run(rows):
        sampler = BatchSampler(training.SharedOrderSampler(rows), config.batch_size, drop_last=False)
        loader, losses = DataLoader(data, batch_size=None, sampler=sampler), []
        start = time.perf_counter()
        for _ in range(len(rows)):
            for xb, yb in loader:
                loss = ex.loss_fn(forward(xb), yb)
                optimizer.zero_grad()
                loss.backward()
                opt_step()
                losses.append(loss.detach())
        torch.stack(losses).cpu()                            # syncs a GPU
        return time.perf_counter() - start

    def reset():
        # Same weights and a zeroed optimizer state in place: new tensors or a new
        # optimizer would fail dynamo's guards and compile again.
        load_numpy(model, params, example)
        with torch.no_grad():
            for state in optimizer.state.values():
                for value in state.values():
                    if torch.is_tensor(value):
                        value.zero_()

    # Three one-batch steps compile everything: Adam traces once without state, once with.
    try:
        with _time_limit(COMPILE_BUDGET_S):
            compile_seconds = run(order[:3, :config.batch_size])
    except Exception as e:     # inductor without a compiler, an unsupported op, the budget
        _say(f"torch.compile failed for {example}: {type(e).__name__}: {(str(e) or '-').splitlines()[0]}")
        return None, None
    times = []
    for _ in range(repeats):
        reset()
        times.append(run(order))
    return statistics.median(times), compile_seconds


def time_jax(example, params, x, y, order, config, dtype, device, repeats):
    """(steady seconds, compile seconds): the first fit compiles and warms up."""
    from jaxport import training
    training._programs.clear()     # measure the compile even if this run was seen before
    first = training.fit(example, params, x, y, order, config, dtype=dtype, device=device)
    return statistics.median(training.fit(example, params, x, y, order, config, dtype=dtype,
                                          device=device).train_seconds
                             for _ in range(repeats)), first.compile_seconds


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


def _say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


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
    _say(f"measuring the {args.dtype} matmul peak on {args.device} ...")
    peak, threads = peak_flops(args.dtype, args.device), torch.get_num_threads()
    torch.set_num_threads(args.torch_threads or threads)
    try:
        results = measure(names, sizes, args)
    finally:
        torch.set_num_threads(threads)
    peak = max(peak, peak_flops(args.dtype, args.device))
    for r in results:
        r["floor_s"] = r["flops"] / peak
    report = {"results": results, "device": device_name(args.device), "versions": versions(),
              "dtype": args.dtype, "device_kind": args.device, "repeats": args.repeats,
              "peak_gflops": peak / 1e9, "torch_threads": args.torch_threads or threads,
              "load_average": [load, os.getloadavg()[0]]}
    print(table(report))
    if args.json:
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2) + "\n"))
    return 0


def measure(names, sizes, args) -> list[dict]:
    results = []
    for name in names:
        params = registry.shared_init(name)
        for size in sizes:
            x, y, order, config = workload(name, size)
            run = (name, params, x, y, order, config, args.dtype, args.device, args.repeats)
            steps = len(order) * specs.steps_per_epoch(len(x), config.batch_size)
            _say(f"{name} {size} ({steps} steps): torch eager ...")
            eager = time_torch_eager(*run)
            compiled = compile_s = None
            if not args.no_compile:
                _say(f"{name} {size}: torch.compile (compiling can take minutes) ...")
                compiled, compile_s = time_torch_compile(*run)
            _say(f"{name} {size}: jaxport ...")
            jax_s, jax_compile_s = time_jax(*run)
            results.append(dict(example=name, size=size, steps=steps, n=len(x), epochs=config.epochs,
                                batch_size=config.batch_size, torch_eager_s=eager,
                                torch_compile_s=compiled, torch_compile_compile_s=compile_s,
                                jax_s=jax_s, jax_compile_s=jax_compile_s,
                                flops=matmul_flops(name, len(order) * len(x))))
    return results


def align(rows: list, left: int) -> list[str]:
    """Text table lines: the first `left` columns left-aligned, the rest right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
            for row in rows]


def _ratio(a, b):
    return f"{a / b:.1f}x" if a is not None and b else "-"


def table(report: dict) -> str:
    """The measurements and their ratios: eager/jax is jaxport's speed-up."""
    def sec(s, c=None):
        return "-" if s is None else f"{s:.3g}" + ("" if c is None else f" ({c:.2g})")
    head = ("example", "size", "steps", "torch eager s", "torch.compile s", "jax s", "floor s",
            "eager/jax", "jax/floor", "compile/jax")
    rows = [head] + [(r["example"], r["size"], str(r["steps"]), sec(r["torch_eager_s"]),
                      sec(r["torch_compile_s"], r["torch_compile_compile_s"]),
                      sec(r["jax_s"], r["jax_compile_s"]), sec(r["floor_s"]),
                      _ratio(r["torch_eager_s"], r["jax_s"]), _ratio(r["jax_s"], r["floor_s"]),
                      _ratio(r["torch_compile_s"], r["jax_s"])) for r in report["results"]]
    lines = align(rows, left=2)
    lines.append(f"{report['dtype']} on {report['device']}; peak {report['peak_gflops']:.1f} GFLOP/s; "
                 f"median of {report['repeats']}; torch threads {report['torch_threads']}; "
                 f"(n): seconds spent compiling; load average {report['load_average'][0]:.1f} at start")
    for r in report["results"]:
        if (r["example"], r["size"], report["dtype"], report["device_kind"]) == \
                ("neural_network", "tutorial", "float32", "cpu"):
            speedup, floor = r["torch_eager_s"] / r["jax_s"], r["jax_s"] / r["floor_s"]
            lines.append(f"targets: eager/jax {speedup:.1f}x (>= {TARGET_SPEEDUP:g}x: "
                         f"{'met' if speedup >= TARGET_SPEEDUP else 'missed'}), jax/floor {floor:.1f}x "
                         f"(<= {TARGET_FLOOR:g}x: {'met' if floor <= TARGET_FLOOR else 'missed'})")
    return "\n".join(lines)
