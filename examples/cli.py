"""`python -m examples`: list, data, init, run, compare, bench.

The one place besides the tests that imports both backends, and only lazily, so each
runs with the other missing. Bad input gets one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from examples.usage import DEVICES_HELP, THREADS_HELP, UsageError
from portcore import registry, specs, weights


class Parser(argparse.ArgumentParser):
    def error(self, message):              # argparse prints usage too; we keep one line
        raise UsageError(message)


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


SEED_MAX = 2 ** 32 - 1      # torch.manual_seed, nnx.Rngs and numpy all take 0 .. 2**32 - 1


def seed(text):
    value = int(text)
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be from 0 to {SEED_MAX}, got {value}")
    return value


def cpu_cores() -> int:
    """The cores this process may run on (its affinity), else the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads(text):
    value, cores = int(text), cpu_cores()
    if not 1 <= value <= cores:        # more threads than cores only queue behind each other
        raise argparse.ArgumentTypeError(f"must be from 1 to {cores} (this machine's cores), got {value}")
    return value


def positive_float(text):
    value = float(text)
    if not value > 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def add_run_flags(p: argparse.ArgumentParser, backend: bool = True, resumable: bool = False) -> None:
    """resumable (run): NAME and --backend may come from a --resume checkpoint, so they
    are checked after parsing (examples/resume.py), as are the defaults."""
    p.add_argument("name", choices=registry.NAMES, metavar="NAME", help="an example (see `list`)",
                   nargs="?" if resumable else None)
    if backend:
        p.add_argument("--backend", choices=specs.BACKENDS, required=not resumable)
    p.add_argument("--dtype", choices=specs.DTYPES, default="float32")
    p.add_argument("--device", choices=specs.DEVICES, default="cpu")
    p.add_argument("--epochs", type=non_negative_int, help="default: the tutorial's")
    p.add_argument("--batch-size", type=positive_int, help="default: the tutorial's")
    p.add_argument("--lr", type=positive_float, help="default: the tutorial's")
    p.add_argument("--shuffle", action="store_true", help="one permutation per epoch, shared by both backends")
    p.add_argument("--seed", type=seed, default=specs.DEFAULT_SEED, help="data noise, init and shuffling")
    p.add_argument("--model", choices=("class", "sequential"), default="class",
                   help="the class model or (neural_network) its Sequential form")
    p.add_argument("--init", type=Path, help="initial parameters, .npz or .safetensors, PyTorch names")
    p.add_argument("--devices", type=positive_int, default=1, metavar="N", help=DEVICES_HELP)
    p.add_argument("--threads", type=threads, metavar="N", help=THREADS_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress output")


def request_host_devices(n: int) -> None:
    """Before JAX starts: N CPU devices (N / JAXPORT_NUM_PROCESSES in a multi-process
    run), appended to any XLA_FLAGS the user set (a count already there wins). Read
    once, when JAX first initialises its backends."""
    flags = os.environ.get("XLA_FLAGS", "")
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):      # N over several processes: a share each
        try:
            n //= max(1, int(os.environ.get("JAXPORT_NUM_PROCESSES", "1")))
        except ValueError:
            raise UsageError("JAXPORT_NUM_PROCESSES must be an integer") from None
    if n > 1 and "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


def request_threads(n: int) -> None:
    """Before JAX starts: with one thread, XLA:CPU runs its matmuls on the calling thread
    (appended to any XLA_FLAGS the user set; a setting already there wins). More threads,
    or None (the default), leave XLA its own pool, a thread per core: it has no finer setting. Once JAX is
    running (the command called in-process) the flag could no longer take effect, and
    is not set, so that it does not leak into later processes either."""
    flags = os.environ.get("XLA_FLAGS", "")
    if n == 1 and "jax" not in sys.modules and "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()


def build_parser() -> Parser:
    parser = Parser(prog="python -m examples", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    p = sub.add_parser("list", help="the example names, one a line")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--trainable", action="store_true", help="only the examples that train")
    which.add_argument("--demos", action="store_true", help="only the demos without training")
    p = sub.add_parser("data", help="write the arrays x and y both backends receive")
    p.add_argument("name", choices=registry.WITH_DATA, metavar="NAME")
    p.add_argument("--seed", type=seed, default=specs.DEFAULT_SEED)
    p.add_argument("--out", type=Path, required=True, help="a .npz file")
    p = sub.add_parser("init", help="write torch-style initial weights (nn.Linear's distribution) "
                       "drawn with numpy's default_rng(--rng)")
    p.add_argument("name", choices=registry.TRAINABLE, metavar="NAME")
    p.add_argument("--rng", type=seed, required=True, help="the numpy generator's seed")
    p.add_argument("--out", type=Path, required=True, help="a .npz or .safetensors file")
    p = sub.add_parser("run", help="run one example on one backend")
    add_run_flags(p, resumable=True)
    p.add_argument("--checkpoint", type=Path, metavar="FILE",
                   help="write the run's state (weights, optimizer, epoch, batch order) to FILE "
                        "(.npz or .safetensors) every --checkpoint-every epochs and at the end")
    p.add_argument("--checkpoint-every", type=positive_int, metavar="K",
                   help="epochs between checkpoints (default: at the end only)")
    p.add_argument("--resume", type=Path, metavar="FILE",
                   help="continue the run checkpointed in FILE to --epochs in all; the other "
                        "flags come from the checkpoint (NAME and --backend may be left out)")
    from examples import resume
    p.set_defaults(**{k: None for k in resume.DEFAULTS})     # None: not given (resume.resolve)
    p.add_argument("--save", type=Path, help="write the fitted parameters (.npz or .safetensors)")
    p.add_argument("--history", type=Path, help="write losses, parameters and metrics as JSON")
    p.add_argument("--gif", type=Path, help="write the animation of the fit (.gif)")
    p.add_argument("--plot", type=Path, help="write the data with the fitted model (.png)")
    p = sub.add_parser("compare", help="the parity ladder for one configuration: exit 0 agree, "
                       "1 differ, 2 bad input, 3 diverged on both")
    add_run_flags(p, backend=False)
    from examples import bench
    bench.configure(sub.add_parser("bench", help="time torch eager, torch.compile and jaxport"))
    return parser


def main(argv=None) -> int:
    # run and compare set torch's threads (--threads): a caller's own count comes back
    torch_threads = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
    try:
        args = build_parser().parse_args(argv)
        if args.command == "run":           # before JAX starts: --devices may come from a checkpoint
            from examples import resume
            resume.resolve(args)
        devices = getattr(args, "devices", 1)      # bench: a list
        request_host_devices(max(devices) if isinstance(devices, (list, tuple)) else devices)
        if hasattr(args, "threads"):
            request_threads(args.threads)
        if args.command == "list":
            print("\n".join(registry.TRAINABLE if args.trainable else registry.DEMOS if args.demos
                            else registry.NAMES))
            return 0
        if args.command == "bench":
            from examples import bench
            return bench.command(args)
        if args.command == "compare":
            from examples import parity_gate
            return parity_gate.compare(args)
        from examples import commands
        return getattr(commands, args.command)(args)
    except (UsageError, weights.WeightsError) as e:
        return fail(str(e))
    except BrokenPipeError:
        raise                   # `| head`: __main__ ends quietly
    except OSError as e:
        # Outputs are checked before training, but a disk can still fill up during it.
        return fail(f"{e.filename or 'output'}: {e.strerror or e}")
    except KeyboardInterrupt:
        # Ctrl-C: outputs are written atomically, so nothing half-written is left.
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if torch_threads is not None:
            sys.modules["torch"].set_num_threads(torch_threads)


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2
