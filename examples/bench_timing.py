"""bench's timings: the matmul peak, torch eager, torch.compile and jaxport, each in
the same process so that contention or clock changes touch all of them."""
from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

from examples.bench_common import say

PEAK_N = 2048                  # the peak matmul, (PEAK_N, PEAK_N) @ (PEAK_N, PEAK_N)
COMPILE_BUDGET_S = 300         # inductor on CPU builds C++: give up (null) past this


def _elapsed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def peak_flops(dtype: str, device: str, repeats: int = 3, n: int | None = None, with_jax: bool = False) -> float:
    """FLOP/s of the best large (n x n, default PEAK_N) matmul: numpy's and torch's BLAS
    on CPU (and XLA's, with_jax), torch on GPU."""
    import torch
    from torchref.numerics import torch_device, torch_dtype
    n = n or PEAK_N
    if device == "cpu":
        a = np.random.default_rng(0).random((n, n)).astype(dtype)
        t = torch.from_numpy(a)
        fns = [lambda: a @ a, lambda: t @ t]
        if with_jax:
            import jax
            j, mm = jax.device_put(a, jax.devices("cpu")[0]), jax.jit(lambda v: v @ v)
            fns.append(lambda: mm(j).block_until_ready())
    else:
        t = torch.rand(n, n, dtype=torch_dtype(dtype), device=torch_device(device))
        fns = [lambda: (t @ t, torch.cuda.synchronize())]
    best = float("inf")
    for fn in fns:
        fn()                                                 # warm-up: threads, pages, clocks
        best = min(best, *(_elapsed(fn) for _ in range(repeats)))
    return 2 * n ** 3 / best


# peak_flops in a child process pinned to one CPU before numpy, torch and jax start
# their threads: however many they start, they share that core.
_ONE_CORE_PROBE = """
import os, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
import torch
torch.set_num_threads(1)
from examples.bench_timing import peak_flops
print(peak_flops(sys.argv[2], "cpu", int(sys.argv[3]), n=int(sys.argv[1]), with_jax=True))
"""


def one_core_peak_flops(dtype: str, repeats: int = 3) -> float | None:
    """FLOP/s of the best large matmul on one core (numpy's, torch's or XLA's), or None
    where a process cannot be pinned. Why: XLA:CPU runs a compiled training loop's ops
    one after another on one thread (it hands ops to another thread only when more than
    8 are ready at once), so one core's matmul speed bounds what jaxport's runs of these
    small models can reach, while the machine's peak counts every core."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    try:
        done = subprocess.run([sys.executable, "-c", _ONE_CORE_PROBE, str(PEAK_N), dtype, str(repeats)],
                              capture_output=True, text=True, timeout=COMPILE_BUDGET_S)
        return float(done.stdout.split()[-1]) if done.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        return None


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
    from torchref import example_module, optim, training
    from torchref.data import SharedOrderSampler
    from torchref.convert import load_numpy
    from portcore import registry

    torch._dynamo.reset()      # fresh guards: otherwise earlier runs count to the recompile limit
    ex = example_module(example)
    model = training.build_model(example, params, dtype=dtype, device=device)
    data = ex.Dataset(x, y, dtype=dtype, device=device, label_dtype=registry.get(example).label_dtype(dtype))
    optimizer = optim.make_optimizer(config, model.parameters())
    forward, opt_step = torch.compile(model), torch.compile(optimizer.step)

    def run(rows):                                       # rows (epochs, N): each epoch's order
        sampler = SharedOrderSampler()                   # torchref.fit's loader: row set per epoch
        loader = DataLoader(data, batch_size=None, sampler=BatchSampler(sampler, config.batch_size, drop_last=False))
        losses, start = [], time.perf_counter()
        for row in rows:
            sampler.row = np.asarray(row)
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
        say(f"torch.compile failed for {example}: {type(e).__name__}: {(str(e) or '-').splitlines()[0]}")
        return None, None
    times = []
    for _ in range(repeats):
        reset()
        times.append(run(order))
    return statistics.median(times), compile_seconds


def time_jax(example, params, x, y, order, config, dtype, device, repeats):
    """(steady seconds, compile seconds): the first fit compiles and warms up."""
    from jaxport import training
    training.clear_caches()        # measure the compile even if this run was seen before
    first = training.fit(example, params, x, y, order, config, dtype=dtype, device=device)
    return statistics.median(training.fit(example, params, x, y, order, config, dtype=dtype,
                                          device=device).train_seconds
                             for _ in range(repeats)), first.compile_seconds
