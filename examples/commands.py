"""The `data`, `run` and `compare` commands. Backends are imported here, lazily."""
from __future__ import annotations

import importlib
import json
import platform
import sys
from pathlib import Path

import numpy as np

from examples import specs, weights
from examples.cli import UsageError

TRAIN_ONLY = ("epochs", "batch_size", "lr", "init", "save", "gif", "plot")
OUTPUT_SUFFIXES = {"save": weights.SUFFIXES, "history": (".json",), "gif": (".gif",),
                   "plot": (".png", ".pdf", ".svg"), "out": (".npz",)}


def load_backend(name: str, dtype: str, device: str):
    """The backend package (torchref or jaxport) with its training module loaded,
    numerics pinned, x64 on for float64, and the device checked."""
    package = {"torch": "torchref", "jax": "jaxport"}[name]
    try:
        numerics = importlib.import_module(f"{package}.numerics")
    except ImportError as e:
        raise UsageError(f"backend {name} is not installed ({e})") from None
    if name == "jax" and dtype == "float64":
        numerics.enable_x64()       # before any jax array exists
    numerics.pin_numerics()
    try:
        (numerics.torch_device if name == "torch" else numerics.jax_device)(device)
    except numerics.NoGPUError as e:
        raise UsageError(str(e)) from None
    importlib.import_module(f"{package}.training")
    return importlib.import_module(package)


def check_args(args) -> None:
    """Everything that can be checked before any work, so nothing fails half-way."""
    for flag, suffixes in OUTPUT_SUFFIXES.items():
        path = getattr(args, flag, None)
        if path is None:
            continue
        if path.suffix not in suffixes:
            raise UsageError(f"--{flag} {path}: the file must end in {' or '.join(suffixes)}")
        if not path.parent.is_dir():
            raise UsageError(f"--{flag} {path}: no such directory {path.parent}")
    if args.name not in specs.TRAINABLE:
        used = [f"--{f.replace('_', '-')}" for f in TRAIN_ONLY if getattr(args, f, None) is not None]
        used += ["--shuffle"] if args.shuffle else []
        used += ["--model"] if args.model != "class" else []
        if used:
            raise UsageError(f"{args.name} is a demo without training: {', '.join(used)} not applicable")
    elif args.model not in specs.forms(args.name):
        raise UsageError(f"{args.name} has no {args.model} form (only neural_network has sequential)")
    if getattr(args, "gif", None) is not None and args.epochs == 0:
        raise UsageError("--gif needs at least one epoch to animate")


def config_of(args) -> specs.TrainConfig:
    changes = {k: getattr(args, k) for k in ("epochs", "batch_size", "lr") if getattr(args, k) is not None}
    return specs.DEFAULTS[args.name].replace(shuffle=args.shuffle, **changes)


def data(args) -> int:
    if args.out.suffix != ".npz" or not args.out.parent.is_dir():
        raise UsageError(f"--out {args.out}: must be a .npz file in an existing directory")
    if args.name == "bce_from_primitives":
        x, y = np.array(specs.BCE_LOGITS), np.array(specs.BCE_LABELS)
    else:
        x, y = specs.make_data(args.name, args.seed)
    weights.save(args.out, {"x": x, "y": y})
    print(f"wrote {args.out}: x {x.shape}, y {y.shape}, float64")
    return 0


def initial_params(args, backend) -> dict:
    if args.init is not None:
        return weights.load(args.init, specs.param_shapes(args.name))
    return backend.training.default_params(args.name, args.seed, dtype=args.dtype, form=args.model)


def train(args, backend, params, frames=False):
    """Fit from `params`; returns (FitResult, metrics) in the exchange format."""
    x, y = specs.make_data(args.name, args.seed)
    config = config_of(args)
    order = specs.batch_order(len(x), config.epochs, config.shuffle, args.seed)
    kw = dict(dtype=args.dtype, device=args.device, form=args.model)
    result = backend.training.fit(args.name, params, x, y, order, config, frames=frames,
                                  progress=not args.quiet, **kw)
    final_loss, _ = backend.training.loss_and_grads(args.name, result.params, x, y, **kw)
    metrics = {"final_loss": final_loss}
    if args.name == "logistic_regression":
        metrics["accuracy"] = specs.accuracy(backend.training.predict(args.name, result.params, x, **kw), y)
    return result, metrics


def run(args) -> int:
    check_args(args)
    backend = load_backend(args.backend, args.dtype, args.device)
    header = {"example": args.name, "backend": args.backend, "dtype": args.dtype,
              "device": args.device, "seed": args.seed}
    if args.name in specs.DEMOS:
        return run_demo(args, backend, header)
    params = initial_params(args, backend)
    result, metrics = train(args, backend, params, frames=args.gif is not None)
    config = config_of(args)
    print(f"{args.backend} {args.name} ({args.dtype}, {args.device}): {config.epochs} epochs, "
          f"{len(result.step_losses)} steps in {result.train_seconds:.3f} s"
          + (f" (+{result.compile_seconds:.2f} s compile)" if result.compile_seconds > 0.001 else ""))
    print("  " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    for name, value in result.params.items():
        shown = np.array2string(value.ravel(), precision=4) if value.size <= 4 else f"{value.shape} array"
        print(f"  {name}: {shown}")
    if args.save:
        weights.save(args.save, result.params)
    if args.history:
        write_json(args.history, {
            **header, "model": args.model, "epochs": config.epochs, "batch_size": config.batch_size,
            "shuffle": config.shuffle, "lr": config.lr, "optimizer": config.optimizer,
            "step_losses": result.step_losses.tolist(), "epoch_losses": result.epoch_losses.tolist(),
            "params": {k: v.tolist() for k, v in result.params.items()}, "metrics": metrics,
            "train_seconds": result.train_seconds, "compile_seconds": result.compile_seconds,
            "init": str(args.init) if args.init else "default", "python": platform.python_version()})
    if args.plot or args.gif:
        from examples import plots
        x, y = specs.make_data(args.name, args.seed)
        if args.plot:
            predictions = backend.training.predict(args.name, result.params, x, dtype=args.dtype,
                                                   device=args.device, form=args.model)
            plots.plot_fit(args.name, x, y, result.params, predictions, args.plot,
                           title_suffix=f" ({args.backend})")
        if args.gif:
            plots.animate(args.name, x, y, result.frames, result.epoch_losses, args.gif)
    return 0


def run_demo(args, backend, header) -> int:
    module = backend.example_module(args.name)
    if args.name == "bce_from_primitives":
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
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)
    weights.atomic_write(path, write)


def diff(a, b) -> tuple[float, float]:
    """(max |a - b|, max |a - b| / max |b|): b is the reference (torch)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size == 0:
        return 0.0, 0.0
    abs_ = float(np.max(np.abs(a - b)))
    scale = float(np.max(np.abs(b)))
    return abs_, abs_ / scale if scale > 0 else abs_


def _parity_suite():
    """The suite's ladder (parity_tests/), which compare runs as it is: one verdict."""
    suite = Path(__file__).resolve().parent.parent / "parity_tests"
    if not (suite / "gate.py").is_file():
        raise UsageError("compare needs the parity suite (parity_tests/ of the source tree)")
    if str(suite) not in sys.path:
        sys.path.insert(0, str(suite))
    return importlib.import_module("gate")


def compare(args) -> int:
    """The parity ladder's rungs 2-7 for this configuration; exit 0 when jaxport agrees
    with torch within rounding noise, 1 when it differs."""
    check_args(args)
    torch_be = load_backend("torch", args.dtype, args.device)
    jax_be = load_backend("jax", args.dtype, args.device)
    if args.name == "tensor_interop":
        raise UsageError("tensor_interop has no numbers to compare; run it with --backend")
    if args.name == "bce_from_primitives":
        return _compare_bce(args, torch_be, jax_be)
    if args.init is not None:
        weights.load(args.init, specs.param_shapes(args.name))      # bad files: exit 2 now
    gate = _parity_suite()
    import ladder  # noqa: PLC0415 (on the path once _parity_suite ran)
    torch_be.numerics.pin_numerics()
    cell = ladder.Cell(args.name, args.model, args.dtype, args.device)
    run = ladder.Run("compare", config_of(args), seed=args.seed,
                     init=str(args.init) if args.init else "shared")
    verdict = gate.judge(cell, run, progress=not args.quiet)
    init = f"from {args.init}" if args.init else f"shared (seed {args.seed})"
    print(f"{args.name}: jaxport vs torch, {args.dtype}, {args.device}, {args.model} form, init {init}")
    if not args.quiet:
        print("\n".join(gate.table(verdict)))
    chaotic = verdict.horizon < verdict.steps
    print(f"horizon: step {verdict.horizon} of {verdict.steps}"
          + (" (torch's own ensemble stays within the single-step tolerance to the end)" if not chaotic else
             " (after it, torch runs 1 ulp apart differ beyond the single-step tolerance: the run is "
             "chaotic there and is judged by outcome statistics)"))
    print(f"last step's loss: jaxport - torch {verdict.diff_final:.3g}; torch's own spread {verdict.spread_final:.3g}")
    if verdict.agree:
        print("VERDICT: agree - jaxport matches torch within torch's own rounding noise at every rung")
        return 0
    rung, message = verdict.failures[0]
    print(f"VERDICT: differ - first at rung {rung}: {message}")
    return 1


def _compare_bce(args, torch_be, jax_be) -> int:
    t = torch_be.example_module(args.name).run(args.dtype, args.device)
    j = jax_be.example_module(args.name).run(args.dtype, args.device)
    rtol = 1e-10 if args.dtype == "float64" else 1.3e-6
    print(f"{args.name}: torch vs jax, {args.dtype}, {args.device}")
    ok = True
    for k in t:
        a, r = diff(j[k], t[k])
        ok &= r <= rtol
        print(f"BCE {k:<18} torch {t[k]:.10g}  jax {j[k]:.10g}  max abs {a:.2e}  rel {r:.2e}")
    print(f"VERDICT: {'agree' if ok else 'differ'} (relative tolerance {rtol:g})")
    return 0 if ok else 1
