"""The `compare` command: the parity suite's ladder (parity_tests/engine/rungs/gate.py) for one
configuration, as one verdict and an exit status (0 agree, 1 differ, 2 bad input, 3 the
run diverges on both backends)."""
from __future__ import annotations

import importlib
import sys

from portcore import registry, specs, weights
from examples import outcome
from examples.usage import UsageError
from examples.commands import check_args, config_of, diff, load_backend

# The ensemble keeps MEMBERS x steps losses; compare is for runs a CI job would judge.
MAX_STEPS = 100_000


def _parity_engine():
    """The parity engine (parity_tests.engine, installed with the package), which compare
    runs as the suite does: one verdict."""
    try:
        return importlib.import_module("parity_tests.engine.rungs.gate")
    except ImportError as error:
        raise UsageError(f"compare needs the parity engine (parity_tests.engine): {error}") from None


def compare(args) -> int:
    """The parity ladder's rungs 2-7 for this configuration; exit 0 when jaxport agrees
    with torch within rounding noise, 1 when it differs."""
    check_args(args)
    torch_be = load_backend("torch", args.dtype, args.device, args.devices, args.threads)
    jax_be = load_backend("jax", args.dtype, args.device, args.devices)
    demo = registry.get(args.name).demo
    if demo == "interop":
        raise UsageError(f"{args.name} has no numbers to compare; run it with --backend")
    if demo == "values":
        return _compare_bce(args, torch_be, jax_be)
    if args.init is not None:
        weights.load(args.init, registry.exchange_shapes(args.name))      # bad files: exit 2 now
    config = config_of(args)
    if config.epochs == 0:
        raise UsageError("compare needs at least one epoch (--epochs 0 trains nothing)")
    steps = config.epochs * specs.steps_per_epoch(len(registry.make_data(args.name, args.seed)[0]), config.batch_size)
    if steps > MAX_STEPS:
        raise UsageError(f"compare judges runs of up to {MAX_STEPS} steps (an ensemble of torch runs "
                         f"is kept in memory); this one has {steps}: use fewer --epochs")
    gate = _parity_engine()
    if registry.get(args.name).ladder == "deep":
        return _compare_deep(args, config, torch_be)
    from parity_tests.engine.rungs import ladder  # noqa: PLC0415
    torch_be.numerics.pin_numerics()
    cell = ladder.Cell(args.name, args.model, args.dtype, args.device)
    # Rungs 6-7 (the free runs) use fit on args.devices devices on both sides; rungs 2-5
    # are single steps from a given state, the same on any number of devices.
    run = ladder.Run("compare", config_of(args), seed=args.seed,
                     init=str(args.init) if args.init else "shared", devices=args.devices)
    init = f"from {args.init}" if args.init else f"shared (seed {args.seed})"
    diverged = _divergence(args, config, ladder.torch_fit(cell, run), ladder.jax_fit(cell, run))
    if diverged is not None:
        return diverged
    verdict = gate.judge(cell, run, progress=not args.quiet)
    on = f"{args.device}, {args.devices} devices (data parallel, rungs 6-7)" if args.devices > 1 else args.device
    print(f"{args.name}: jaxport vs torch, {args.dtype}, {on}, {args.model} form, init {init}")
    if not args.quiet:
        print("\n".join(gate.table(verdict)))
    chaotic = verdict.horizon < verdict.steps
    print(f"horizon: step {verdict.horizon} of {verdict.steps}"
          + (" (torch's own ensemble stays within the single-step tolerance to the end)" if not chaotic else
             " (after it, torch runs 1 ulp apart differ beyond the single-step tolerance: the run is "
             "chaotic there and is judged by outcome statistics)"))
    print(f"last step's loss: jaxport - torch {verdict.diff_final:.3g}; torch's own spread {verdict.spread_final:.3g}")
    return _verdict(verdict, "torch's own rounding noise")


def _verdict(verdict, within: str) -> int:
    """The VERDICT line and compare's exit status: 0 agree, 1 differ."""
    if verdict.agree:
        print(f"VERDICT: agree - jaxport matches torch within {within} at every rung")
        return 0
    rung, message = verdict.failures[0]
    print(f"VERDICT: differ - first at rung {rung}: {message}")
    return 1


def _compare_deep(args, config, torch_be) -> int:
    """cnn, lstm, gru: parity_tests/engine/rungs/deep_gate.py's rungs 2-7, dropout on in training mode,
    BatchNorm's running statistics compared as state."""
    if args.devices > 1 or args.model != "class":
        raise UsageError(f"compare {args.name}: one device and the class form only")
    from parity_tests.engine.rungs import deep_free_run, deep_gate, deep_ladder  # noqa: PLC0415
    torch_be.numerics.pin_numerics()
    cell = deep_ladder.DeepCell(args.name, args.dtype, args.device)
    run = deep_ladder.DeepRun(config, seed=args.seed, init=str(args.init) if args.init else "shared", label="compare")
    diverged = _divergence(args, config, deep_free_run.fit_run("torch", cell, run),
                           deep_free_run.fit_run("jaxport", cell, run))
    if diverged is not None:
        return diverged
    verdict = deep_gate.judge(cell, run, progress=not args.quiet)
    init = f"from {args.init}" if args.init else f"shared (seed {args.seed})"
    print(f"{args.name}: jaxport vs torch, {args.dtype}, {args.device}, init {init}, dropout on, "
          f"{verdict.steps} steps")
    if not args.quiet:
        print("\n".join(gate_table(verdict)))
    return _verdict(verdict, "the ladder's tolerances")


def gate_table(verdict):
    from parity_tests.engine.rungs import gate  # noqa: PLC0415
    return gate.table(verdict)


def _divergence(args, config, torch_result, jax_result) -> int | None:
    """Exit 3 when both runs diverge (the configuration does), 1 when only one does;
    None when both stay finite."""
    steps = {"torch": outcome.first_nonfinite_step(torch_result), "jaxport": outcome.first_nonfinite_step(jax_result)}
    if all(s is None for s in steps.values()):
        return None
    said = ", ".join(f"{name} at step {s + 1}" if s is not None else f"{name} stays finite" for name, s in steps.items())
    if all(s is not None for s in steps.values()):
        print(f"error: training diverged on both backends ({said}): nothing to compare. "
              f"Try a smaller --lr (this run: {config.lr:g})", file=sys.stderr)
        return outcome.DIVERGED
    print(f"VERDICT: differ - only one backend diverged: {said}")
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
