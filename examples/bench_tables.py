"""`bench --write-tables`: the bench's figures written into the README (a compact
table) and docs/speed.md (the full one), between marker lines, only when the machine
was quiet.

Other processes slow torch eager more than jaxport's one compiled program (measured:
the ratios of runs at load average 4-9 flattered jaxport), so a table taken on a busy
machine says little. The 1-minute load average is read before and after every figure;
above BUSY_PER_CORE x the cores (1.5 on a 2-core machine) the tables are not written
unless --force is given, and then they say the load.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from portcore.weights import atomic_write

BUSY_PER_CORE = 0.75
README, SPEED = Path("README.md"), Path("docs/speed.md")
MARKERS = {README.name: ("<!-- speed-table:begin -->", "<!-- speed-table:end -->"),
           SPEED.name: ("<!-- bench-tables:begin -->", "<!-- bench-tables:end -->")}


def busy_limit() -> float:
    return BUSY_PER_CORE * (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())


def load() -> float:
    return os.getloadavg()[0]


def check_files(files=(README, SPEED)) -> str | None:
    """Why the tables cannot be written (a missing file or marker), or None; checked
    before the minutes of measuring."""
    for path in files:
        if not path.is_file():
            return f"--write-tables: {path} not found (run bench from the repository's root)"
        text = path.read_text()
        for marker in MARKERS[path.name]:
            if marker not in text:
                return f"--write-tables: {path} has no line {marker}"
    return None


def busy(report: dict) -> float | None:
    """The highest load average seen around any figure, if above the limit."""
    seen = [report["load_average"][0], report["load_average"][1]]
    seen += [v for r in report["results"] for v in r.get("load", ())]
    worst = max(seen)
    return worst if worst > busy_limit() else None


def _s(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def _x(a, b) -> str:
    return f"{a / b:.1f}x" if a is not None and b else "-"


def caption(report: dict, forced_at: float | None) -> str:
    v = report["versions"]
    one_core = f" ({report['peak_1core_gflops']:.0f} on one core)" if report.get("peak_1core_gflops") else ""
    loads = [report["load_average"][0], report["load_average"][1]] + [x for r in report["results"] for x in r["load"]]
    text = (f"{report['dtype']}, {report['device']}, {time.strftime('%Y-%m-%d')}; median of {report['repeats']} "
            f"after a warm-up; torch {v['torch']} on {report['torch_threads']} thread(s), jax {v['jax']}, "
            f"flax {v['flax']}, optax {v['optax']}; matmul peak {report['peak_gflops']:.0f} GFLOP/s{one_core}; "
            f"load average {min(loads):.2f}-{max(loads):.2f} around the figures")
    if forced_at is not None:
        text += f" (**measured under load {forced_at:.1f}, written with --force**: read ratios with care)"
    return text + "."


def compact(report: dict) -> list[str]:
    out = ["| example | size | torch eager (s) | torch.compile (s) | jaxport (s) | eager / jaxport | "
           "torch.compile / jaxport | jaxport / floor | jaxport / one-core floor |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["results"]:
        out.append(f"| `{r['example']}` | {r['size']} | {_s(r['torch_eager_s'])} | {_s(r['torch_compile_s'])} | "
                   f"{_s(r['jax_s'])} | {_x(r['torch_eager_s'], r['jax_s'])} | "
                   f"{_x(r['torch_compile_s'], r['jax_s'])} | {_x(r['jax_s'], r['floor_s'])} | "
                   f"{_x(r['jax_s'], r.get('floor_1core_s'))} |")
    return out


def full(report: dict) -> list[str]:
    out = ["| example | size | steps | batch | torch eager (s) | torch.compile (s) | torch.compile compile (s) | "
           "jaxport (s) | jaxport compile (s) | FLOP floor (s) | one-core floor (s) | eager / jaxport | "
           "torch.compile / jaxport | jaxport / floor | jaxport / one-core floor | load before, after |",
           "| --- | --- " + "| ---: " * 13 + "| --- |"]
    for r in report["results"]:
        out.append(f"| `{r['example']}` | {r['size']} | {r['steps']} | {r['batch_size']} | {_s(r['torch_eager_s'])} | "
                   f"{_s(r['torch_compile_s'])} | {_s(r['torch_compile_compile_s'])} | {_s(r['jax_s'])} | "
                   f"{_s(r['jax_compile_s'])} | {_s(r['floor_s'])} | {_s(r.get('floor_1core_s'))} | "
                   f"{_x(r['torch_eager_s'], r['jax_s'])} | {_x(r['torch_compile_s'], r['jax_s'])} | "
                   f"{_x(r['jax_s'], r['floor_s'])} | {_x(r['jax_s'], r.get('floor_1core_s'))} | "
                   f"{r['load'][0]:.2f}, {r['load'][1]:.2f} |")
    return out


def _between(path: Path, lines: list[str]) -> str:
    begin, end = MARKERS[path.name]
    text = path.read_text()
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return head + begin + "\n" + "\n".join(lines) + "\n" + end + tail


def write(report: dict, force: bool, files=(README, SPEED)) -> str | None:
    """Write both tables (atomically), or say why not: a busy machine without --force."""
    problem = check_files(files)
    if problem:
        return problem
    loaded = busy(report)
    if loaded is not None and not force:
        return (f"--write-tables: the load average reached {loaded:.1f} (over {busy_limit():.1f} on this machine) "
                "while measuring, so the tables were not written; measure on a quiet machine, or pass --force")
    note = caption(report, loaded)
    for path in files:
        body = compact(report) if path.name == "README.md" else full(report)
        new = _between(path, [*body, "", note])
        atomic_write(path, lambda tmp, new=new: Path(tmp).write_text(new))
    return None
