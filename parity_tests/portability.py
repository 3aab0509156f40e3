"""`make portability`: the free-run verdicts (rungs 6-7) on simulated machines, with 0
false failures to show and every planted bug still caught.

A simulated machine is a way to round differently from this one:
- torch's float32 and float64 matmuls go through MKL, whose code path MKL_CBWR forces
  (AUTO, AVX512, AVX2, COMPATIBLE): other CPUs take other paths;
- torch on 1 or 2 threads (another reduction split);
- jaxport starting from the initial weights moved by one ulp in a random direction
  (NUDGES seeds; 0 = not moved): another implementation's first rounding.
MKL_CBWR is read when MKL starts, so each torch configuration runs in its own process
(`--worker`); the jaxport starts cost one jaxport fit each. Besides, at MKL AUTO and 1
thread, INITS torch-style initial weights other than the shared one give other
trajectories and horizons. The record (docs/portability-cpu.json) holds every verdict
and a markdown section that the parity report (docs/parity-cpu.md) includes.

    python -m parity_tests.portability [--quick]      # the driver
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CBWR = ("AUTO", "AVX512", "AVX2", "COMPATIBLE")
THREADS = (1, 2)
NUDGES = (0, 1, 2, 3, 4)
INITS = tuple(f"torch-style:{n}" for n in range(100, 110))
DTYPES = ("float32", "float64")


def variants(example: str) -> list:
    """The default run and test_parity_variants' runs (label, changes) for an example."""
    from portcore import registry
    record = registry.get(example)
    net = record.variant_epochs is not None
    epochs = record.variant_epochs or record.defaults.epochs
    return [("default", {}), ("batch 30, shuffled", dict(batch_size=30, shuffle=True, epochs=epochs)),
            ("SGD momentum 0.9", dict(optimizer="sgd", momentum=0.9, epochs=100 if net else epochs)),
            ("SGD", dict(optimizer="sgd", epochs=100)) if net else ("Adam lr 0.1", dict(optimizer="adam", lr=0.1))]


def judge(cell, run) -> dict:
    from parity_tests.engine.rungs import ladder
    from parity_tests.engine import parity
    row = dict(cell=str(cell), run=run.label, init=run.init, nudge=run.jax_nudge)
    try:
        with parity.recording():
            ladder.rung6_free_running(cell, run)
            ladder.rung7_fitted_model(cell, run)
        row["passed"], row["error"] = True, ""
    except parity.ParityError as error:
        row["passed"], row["error"] = False, str(error)[:400]
    v = ladder.free_run_verdict(cell, run)
    row.update(horizon=v["horizon"], steps=v["steps"])
    return row


def worker(args) -> dict:
    import parity_tests.tests.conftest  # noqa: F401  (the suite's pinned numerics)
    import torch
    torch.set_num_threads(args.threads)
    from parity_tests.engine.rungs import ladder
    from parity_tests.tests import test_parity_planted_bugs as planted
    from portcore import registry
    runs, bugs = [], []
    examples = tuple(n for n in registry.LADDER if registry.get(n).chaotic) if args.quick else registry.LADDER
    for example in examples:
        for dtype in ("float32",) if args.quick else DTYPES:
            cell = ladder.Cell(example, "class", dtype, "cpu")
            for label, changes in variants(example)[:1 if args.quick else None]:
                base = ladder.Run(label, registry.get(example).defaults.replace(**changes))
                for nudge in NUDGES[:2 if args.quick else None]:
                    runs.append(judge(cell, ladder.Run(label, base.config, jax_nudge=nudge)))
            if args.inits and registry.get(example).chaotic:
                runs += [judge(cell, ladder.Run(init, registry.get(example).defaults, init=init, jax_nudge=nudge))
                         for init in INITS for nudge in (0, 1)]
    if not args.quick:
        import pytest
        for bug, (plant, bug_examples, extra) in planted.BUGS.items():
            for dtype in DTYPES:
                ladder.clear_jax_caches()
                with pytest.MonkeyPatch.context() as mp:
                    plant(mp)
                    for example in bug_examples:
                        results = planted.hunt(ladder.Cell(example, "class", dtype, "cpu"), [*extra, 2, 3, 4, 5, 6, 7])
                        caught = [r for r, e in results if e][:1]
                        bugs.append(dict(bug=bug, dtype=dtype, example=example, caught=caught))
                ladder.clear_jax_caches()
    return dict(cbwr=os.environ.get("MKL_CBWR", "unset"), threads=args.threads, runs=runs, bugs=bugs)


def drive(quick: bool) -> dict:
    """One worker process per torch configuration, two at a time (this machine's cores)."""
    start = time.time()
    configs = [(c, t) for c in CBWR for t in THREADS] if not quick else [("AVX2", 1), ("COMPATIBLE", 1)]
    results, running = [], []
    try:
        while configs or running:
            while configs and len(running) < 2:
                config = configs.pop(0)
                cmd = [sys.executable, "-m", "parity_tests.portability", "--worker", "--threads", str(config[1])]
                cmd += ["--quick"] if quick else []
                cmd += ["--inits"] if config == ("AUTO", 1) and not quick else []
                env = dict(os.environ, MKL_CBWR=config[0], PYTHONUNBUFFERED="1")
                print(f"portability: MKL_CBWR={config[0]}, torch threads {config[1]} ...", file=sys.stderr, flush=True)
                running.append((config, subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True, cwd=HERE.parent)))
            config, proc = running.pop(0)
            out, _ = proc.communicate()
            if proc.returncode:
                raise RuntimeError(f"worker MKL_CBWR={config[0]} threads {config[1]} failed ({proc.returncode})")
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for _, proc in running:
            proc.kill()
    return dict(results=results, seconds=time.time() - start)


def markdown(record: dict) -> list:
    from parity_tests.engine.reports.port_report import table_head, table_row
    runs = [dict(r, cbwr=w["cbwr"], threads=w["threads"]) for w in record["results"] for r in w["runs"]]
    machines = {(r["cbwr"], r["threads"], r["nudge"]) for r in runs if r["init"] == "shared"}
    failed = [r for r in runs if not r["passed"]]
    out = ["## Portability: the verdicts on simulated machines (`make portability`)", "",
           f"{len(machines)} simulated machines on the shared initial weights (MKL_CBWR "
           f"{', '.join(CBWR)} x torch threads {', '.join(map(str, THREADS))} x jaxport from the "
           f"weights or moved one ulp, {len(NUDGES) - 1} seeds), every trainable example, both dtypes, "
           f"the default run and the variants; and {len(INITS)} torch-style initial weights "
           "(numpy default_rng(100..109)) at MKL AUTO, 1 thread, with jaxport from the weights and "
           f"moved one ulp. {len(runs)} free-run verdicts (rungs 6 and 7), "
           f"**{len(failed)} false failures**; {record['seconds'] / 60:.0f} minutes on this machine.", "",
           "The suite pins torch to 1 thread (steady timings on a 2-core machine) and MKL_CBWR to "
           "nothing: the verdicts above hold with either thread count and every MKL path.", "",
           *table_head("example", "dtype", "run", "verdicts", "failed", "horizon (min-max over machines)")]
    groups = {}
    for r in runs:
        example, _, dtype, _ = r["cell"].split("-")
        groups.setdefault((example, dtype, r["run"] if r["init"] == "shared" else "torch-style inits"), []).append(r)
    for (example, dtype, run), rows in sorted(groups.items()):
        hs, steps = [r["horizon"] for r in rows], rows[0]["steps"]
        fmt = lambda h: "never" if h >= steps else str(h)   # noqa: E731
        out.append(table_row(example, dtype, run, len(rows), sum(not r["passed"] for r in rows),
                             f"{fmt(min(hs))} - {fmt(max(hs))} (of {steps})"))
    out += ["", "Planted bugs on every torch configuration (jaxport's start does not enter rungs 2-5, "
            "where they are caught):", "", *table_head("bug", "dtype", "example", "caught at rung, per configuration")]
    bugs = {}
    for w in record["results"]:
        for b in w["bugs"]:
            bugs.setdefault((b["bug"], b["dtype"], b["example"]), []).append(
                f"{w['cbwr']}/{w['threads']}: {b['caught'][0] if b['caught'] else '**missed**'}")
    out += [table_row(*key, "; ".join(where)) for key, where in bugs.items()]
    out += [""] + [f"- FAILED: {r['cbwr']}/{r['threads']} nudge {r['nudge']} {r['cell']} {r['run']}: {r['error']}"
                   for r in failed]
    return out


def write_record(path: Path, record: dict) -> None:
    """The record with one line per verdict, so that a rerun's diff reads row by row."""
    lines = ["{", f' "seconds": {json.dumps(record["seconds"])},', f' "markdown": {json.dumps(record["markdown"])},',
             ' "results": [']
    for i, w in enumerate(record["results"]):
        rows = ",\n".join("   " + json.dumps(r) for r in w["runs"])
        lines.append(f'  {{"cbwr": {json.dumps(w["cbwr"])}, "threads": {w["threads"]}, '
                     f'"bugs": {json.dumps(w["bugs"])},\n   "runs": [\n{rows}]}}' + ("," if i < len(record["results"]) - 1 else ""))
    path.write_text("\n".join(lines + [" ]", "}"]) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--inits", action="store_true")
    p.add_argument("--quick", action="store_true", help="network only, two MKL paths (the suite's slice)")
    p.add_argument("--out", type=Path, default=HERE.parent / "docs" / "portability-cpu.json")
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    record = drive(args.quick)
    record["markdown"] = markdown(record)
    if not args.quick:
        write_record(args.out, record)
    print("\n".join(record["markdown"]))
    return int(any(not r["passed"] for w in record["results"] for r in w["runs"])
               or any(not b["caught"] for w in record["results"] for b in w["bugs"]))


if __name__ == "__main__":
    sys.exit(main())
