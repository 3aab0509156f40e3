"""The `compare` command: check_port's rungs 2-7 over one example's sides (the suite's
ladder, parity_tests/engine/rungs/ladder.py) for one configuration, as one verdict and
an exit status (0 agree, 1 differ, 2 bad input, 3 the run diverges on both backends)."""
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
    runs as the suite does: check_port's rungs over the example's sides."""
    try:
        return (importlib.import_module("parity_tests.engine.rungs.ladder"),
                importlib.import_module("parity_tests.engine.rungs.harness"),
                importlib.import_module("parity_tests.engine.reports.port_report"))
    except ImportError as error:
        raise UsageError(f"compare needs the parity engine (parity_tests.engine): {error}") from None


def compare(args) -> int:
    """check_port's rungs 2-7 over this example's sides (torchref's fit against
    jaxport's compiled step and whole run); exit 0 when jaxport agrees with torch within
    rounding noise, 1 when it differs."""
    check_args(args)
    torch_be = load_backend("torch", args.dtype, args.device, args.devices, args.threads)
    jax_be = load_backend("jax", args.dtype, args.device, args.devices)
    record = registry.get(args.name)
    if record.demo == "interop":
        raise UsageError(f"{args.name} has no numbers to compare; run it with --backend")
    if record.demo == "values":
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
    deep = record.ladder == "deep"
    if deep and (args.devices > 1 or args.model != "class"):
        raise UsageError(f"compare {args.name}: one device and the class form only")
    ladder, harness, port_report = _parity_engine()
    torch_be.numerics.pin_numerics()
    cell = ladder.Cell(args.name, args.model, args.dtype, args.device)
    # Rungs 6-7 (the free runs) use fit on args.devices devices on both sides; rungs 2-5
    # are single steps from a given state, the same on any number of devices.
    run = ladder.Run("compare", config, seed=args.seed, init=str(args.init) if args.init else "shared",
                     devices=args.devices)
    diverged = _divergence(args, config, ladder.torch_fit(cell, run), ladder.jax_fit(cell, run))
    if diverged is not None:
        return diverged
    # rung 5 over the deep examples' first epoch, as the suite's
    first_epoch = specs.steps_per_epoch(len(registry.make_data(args.name, args.seed)[0]), config.batch_size)
    port = ladder.port_run(cell, run, first_epoch if deep else None)
    report = harness.run_ladder(port, (2, 3, 4, 5, 6, 7), keep_going=True, locate=False,
                                progress=None if args.quiet else _progress)
    init = f"from {args.init}" if args.init else f"shared (seed {args.seed})"
    on = f"{args.device}, {args.devices} devices (data parallel, rungs 6-7)" if args.devices > 1 else args.device
    print(f"{args.name}: jaxport vs torch, {args.dtype}, {on}, {args.model} form, init {init}"
          + (", dropout on" if deep else ""))
    if not args.quiet:
        print("\n".join(port_report.rows_table(report.rows)))
    free = port.free
    chaotic = free["horizon"] < free["steps"]
    print(f"horizon: step {free['horizon']} of {free['steps']}"
          + (" (torch's own ensemble stays within the single-step tolerance to the end)" if not chaotic else
             " (after it, torch runs 1 ulp apart differ beyond the single-step tolerance: the run is "
             "chaotic there and is judged by outcome statistics)"))
    print(f"last step's loss: jaxport - torch {free['diff'][-1]:.3g}; torch's own spread {free['spread'][-1]:.3g}")
    if report.passed:
        print("VERDICT: agree - jaxport matches torch within torch's own rounding noise at every rung")
        return 0
    first = report.failures[0]
    print(f"VERDICT: differ - first at rung {first['rung']}: {first['message']}")
    return 1


def _progress(rung: int) -> None:
    from parity_tests.engine import parity  # noqa: PLC0415
    print(f"compare: rung {rung} ({parity.RUNG_NAMES[rung]}) ...", file=sys.stderr, flush=True)


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
