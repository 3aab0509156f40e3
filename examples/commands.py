"""The `data`, `run` and `compare` commands. Backends are imported here, lazily."""
from __future__ import annotations

import importlib
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

from portcore import registry, specs, weights
from examples import outcome
from examples.usage import TORCH_DEFAULT_THREADS, UsageError

TRAIN_ONLY = ("epochs", "batch_size", "lr", "init", "save", "gif", "plot", "checkpoint", "resume")
OUTPUT_SUFFIXES = {"save": weights.SUFFIXES, "history": (".json",), "gif": (".gif",),
                   "plot": (".png", ".pdf", ".svg"), "out": (".npz",), "checkpoint": weights.SUFFIXES}


def load_backend(name: str, dtype: str, device: str, devices: int = 1, threads: int | None = None):
    """The backend package (torchref or jaxport) with its training module loaded,
    numerics pinned and the device (and `devices` of it) checked; torch on `threads`
    intra-op threads, None: 1 (jax's are set before it starts: cli.request_threads). (jaxport
    switches x64 on for its float64 calls only: nothing global here.)"""
    package = {"torch": "torchref", "jax": "jaxport"}[name]
    try:
        numerics = importlib.import_module(f"{package}.numerics")
    except ImportError as e:
        raise UsageError(f"backend {name} is not installed ({e})") from None
    if name == "jax" and devices > 1:
        from jaxport import parallel
        try:                        # a multi-process run: join it before JAX starts
            parallel.initialize_from_env(device)
        except parallel.DevicesError as e:
            raise UsageError(str(e)) from None
    numerics.pin_numerics()
    if name == "torch":
        import torch
        torch.set_num_threads(threads or TORCH_DEFAULT_THREADS)
    try:
        (numerics.torch_device if name == "torch" else numerics.jax_device)(device)
    except numerics.NoGPUError as e:
        raise UsageError(str(e)) from None
    if devices > 1:
        check_devices(name, device, devices)
    importlib.import_module(f"{package}.training")
    return importlib.import_module(package)


# What one torch DDP rank on a CPU holds (torch, gloo, the data): measured 0.31 GiB
# resident per rank; a run that asks for more ranks than memory holds would swap the
# machine to a halt (`bench --devices 200` filled 24 GiB) instead of failing.
RANK_BYTES = int(0.4 * 2**30)


def check_devices(backend: str, device: str, devices: int) -> None:
    """--devices N needs N devices: torch N CUDA GPUs for --device gpu (N CPU processes
    otherwise), JAX N devices of the platform (made on a CPU by XLA_FLAGS, cli.py)."""
    if backend == "torch":
        import torch
        if device == "gpu" and torch.cuda.device_count() < devices:
            raise UsageError(f"--devices {devices}: torch sees {torch.cuda.device_count()} CUDA GPU(s)")
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
        if device == "cpu" and memory and devices * RANK_BYTES > memory:
            raise UsageError(f"--devices {devices}: {devices} torch processes need about "
                             f"{devices * RANK_BYTES / 2**30:.0f} GiB ({RANK_BYTES / 2**30:.1f} GiB each), "
                             f"this machine has {memory / 2**30:.0f} GiB")
        return
    from jaxport import parallel
    try:
        parallel.mesh(devices, device)
    except parallel.DevicesError as e:
        raise UsageError(str(e)) from None


def check_args(args) -> None:
    """Everything that can be checked before any work, so nothing fails half-way."""
    for flag, suffixes in OUTPUT_SUFFIXES.items():
        path = getattr(args, flag, None)
        if path is None:
            continue
        if path.suffix not in suffixes:
            raise UsageError(f"--{flag} {path}: the file must end in {' or '.join(suffixes)}")
        check_writable(flag, path)
    if args.name not in registry.TRAINABLE:
        used = [f"--{f.replace('_', '-')}" for f in TRAIN_ONLY if getattr(args, f, None) is not None]
        used += ["--shuffle"] if args.shuffle else []
        used += ["--model"] if args.model != "class" else []
        if used:
            raise UsageError(f"{args.name} is a demo without training: {', '.join(used)} not applicable")
    elif args.model not in registry.forms(args.name):
        having = [n for n in registry.TRAINABLE if args.model in registry.forms(n)]
        raise UsageError(f"{args.name} has no {args.model} form (only {', '.join(having)} has it)")
    devices = getattr(args, "devices", 1)
    if devices > 1 and args.name in registry.TRAINABLE and devices > config_of(args).batch_size:
        raise UsageError(f"--devices {devices}: more devices than rows in a batch "
                         f"({config_of(args).batch_size}); every device needs at least one")
    if devices > 1 and args.name in registry.TRAINABLE and not registry.get(args.name).data_parallel:
        raise UsageError(f"--devices {devices}: {args.name} runs on one device only (its BatchNorm "
                         "statistics and dropout masks would be per device under DDP)")
    if devices > 1 and args.name in registry.DEMOS:
        raise UsageError(f"{args.name} is a demo without training: --devices not applicable")
    if getattr(args, "gif", None) is not None and args.epochs == 0:
        raise UsageError("--gif needs at least one epoch to animate")


def check_writable(flag: str, path) -> None:
    """Before any work: a read-only place, a missing directory or a directory named as
    the file would otherwise fail after training, with the time spent lost."""
    try:
        weights.check_writable(path)
    except OSError as e:
        where = f"cannot create a file in {path.parent}: {e.strerror}" if e.filename else str(e)
        raise UsageError(f"--{flag} {path}: {where}") from None


def config_of(args) -> specs.TrainConfig:
    changes = {k: getattr(args, k) for k in ("epochs", "batch_size", "lr") if getattr(args, k) is not None}
    return registry.get(args.name).defaults.replace(shuffle=args.shuffle, **changes)


def data(args) -> int:
    if args.out.suffix != ".npz":
        raise UsageError(f"--out {args.out}: must be a .npz file")
    check_writable("out", args.out)
    x, y = registry.make_data(args.name, args.seed)
    weights.save(args.out, {"x": x, "y": y})
    print(f"wrote {args.out}: x {x.shape}, y {y.shape}, float64")
    return 0


def init(args) -> int:
    """Write torch-style initial weights drawn with numpy.random.default_rng(--rng)."""
    if args.name not in registry.TRAINABLE:
        raise UsageError(f"{args.name} has no weights (trainable: {', '.join(registry.TRAINABLE)})")
    if args.out.suffix not in weights.SUFFIXES:
        raise UsageError(f"--out {args.out}: the file must end in {' or '.join(weights.SUFFIXES)}")
    check_writable("out", args.out)
    weights.save(args.out, registry.torch_style_init(args.name, args.rng))
    print(f"wrote {args.out}: {args.name}'s initial weights, U(+-1/sqrt(fan_in)) from default_rng({args.rng})")
    return 0


def run(args) -> int:
    check_args(args)
    backend = load_backend(args.backend, args.dtype, args.device, args.devices, args.threads)
    header = {"example": args.name, "backend": args.backend, "dtype": args.dtype,
              "device": args.device, "seed": args.seed}
    if args.name in registry.DEMOS:
        return run_demo(args, backend, header)
    from examples import resume
    config, held = config_of(args), registry.get(args.name).held_out
    result, metrics = resume.train(args, backend, config, resume.initial_params(args, backend),
                                   frames=args.gif is not None or (args.plot is not None and held), stop_on_divergence=True)
    start = args.resumed[0]["epoch"] if args.resumed else 0
    per_epoch = specs.steps_per_epoch(len(registry.make_data(args.name, args.seed)[0]), config.batch_size)
    on = f"{args.device} x{args.devices}" if args.devices > 1 else args.device
    print(f"{args.backend} {args.name} ({args.dtype}, {on}): {result.epochs_run} epochs"
          + (f" (resumed at epoch {start})" if args.resumed else "")
          + f", {result.epochs_run * per_epoch} steps in {result.train_seconds:.3f} s"
          + (f" (+{result.compile_seconds:.2f} s compile)" if result.compile_seconds > 0.001 else ""))
    print("  " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    for name, value in result.params.items():
        shown = np.array2string(value.ravel(), precision=4) if value.size <= 4 else f"{value.shape} array"
        print(f"  {name}: {shown}")
    diverged = outcome.first_nonfinite_step(result)
    if args.history:        # also for a diverged run: it is the evidence
        write_json(args.history, {
            **header, "devices": args.devices, "model": args.model, "epochs": config.epochs, "batch_size": config.batch_size,
            "shuffle": config.shuffle, "lr": config.lr, "optimizer": config.optimizer,
            "epochs_run": result.epochs_run, "start_epoch": start, "diverged_at_step": diverged,
            "resumed_from": str(args.resume) if args.resume else None,
            "recorded_epochs": None if result.recorded_epochs is None else result.recorded_epochs.tolist(),
            "step_losses": result.step_losses.tolist(), "epoch_losses": result.epoch_losses.tolist(),
            "params": {k: v.tolist() for k, v in result.params.items()}, "metrics": metrics,
            "train_seconds": result.train_seconds, "compile_seconds": result.compile_seconds,
            "init": str(args.init) if args.init else "default", "python": platform.python_version()})
    if diverged is not None:   # never save non-finite weights, nor plot them as a fit
        print("error: " + outcome.describe(result, diverged, per_epoch, config.epochs, config.lr),
              file=sys.stderr)
        return outcome.DIVERGED
    if args.save:
        weights.save(args.save, result.params)
    if (args.plot or args.gif) and held:
        _plot_classifier(args, backend, result)
    elif args.plot or args.gif:
        from examples import plots
        x, y = registry.make_data(args.name, args.seed)
        if args.plot:
            predictions = backend.training.predict(args.name, result.params, x, dtype=args.dtype,
                                                   device=args.device, form=args.model)
            plots.plot_fit(args.name, x, y, result.params, predictions, args.plot,
                           title_suffix=f" ({args.backend})")
        if args.gif:
            plots.animate(args.name, x, y, result.frames, result.epoch_losses, args.gif,
                          epochs=result.recorded_epochs)
    return 0


def _plot_classifier(args, backend, result) -> None:
    """cnn, lstm, gru (examples/plots_digits.py): from the frames, the model at each
    epoch's start, and the fitted model's logits appended as the last frame."""
    from examples import plots_digits
    (x, y), held = registry.make_data(args.name, args.seed), registry.get(args.name).held_out(args.seed)
    fitted = backend.training.predict(args.name, result.params, np.concatenate([x, held[0]]),
                                      dtype=args.dtype, device=args.device, form=args.model)
    if args.plot:
        plots_digits.plot(args.name, np.concatenate([result.frames, fitted[None]]), y, held, args.plot,
                          title_suffix=f" ({args.backend})")
    if args.gif:
        plots_digits.animate(args.name, result.frames, y, held, args.gif, epochs=result.recorded_epochs)


def run_demo(args, backend, header) -> int:
    module = backend.example_module(args.name)
    if registry.get(args.name).demo == "values":
        values = module.run(dtype=args.dtype, device=args.device)
        for name, value in values.items():
            print(f"{args.backend} BCE, {name.replace('_', ' ')}: {value:.6f}")
    else:
        values = module.run()
        if args.backend == "jax":
            try:
                from examples import interop
                values["rows"] += interop.run()["rows"]
            except ImportError:
                print("(torch is not installed: no jax.Array <-> torch.Tensor rows)")
        print(f"{args.backend} tensor interop, dtype {values['dtype']}: {values['value']}")
        for row in values["rows"]:
            print(f"  {row['operation']:<40} {'shares memory' if row['shares_memory'] else 'copies'}")
        print(f"  numpy view writeable: {values['numpy_view_writeable']}; "
              f"an update is seen by the original: {values['update_seen_by_original']}")
    if args.history:
        write_json(args.history, {**header, "values": values})
    return 0


def write_json(path, obj) -> None:
    """Strict JSON: inf and NaN (a diverged run's losses) are written as null."""
    def finite(v):
        if isinstance(v, float):
            return v if np.isfinite(v) else None
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, list):
            return [finite(x) for x in v]
        return v

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(finite(obj), f, indent=1, allow_nan=False)
    weights.atomic_write(path, write)


def diff(a, b) -> tuple[float, float]:
    """(max |a - b|, max |a - b| / max |b|): b is the reference (torch)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size == 0:
        return 0.0, 0.0
    abs_ = float(np.max(np.abs(a - b)))
    scale = float(np.max(np.abs(b)))
    return abs_, abs_ / scale if scale > 0 else abs_

