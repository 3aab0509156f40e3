"""A property of the command line: whatever flags and values a user combines, on every
subcommand, it ends with 0, 1 (compare: differ), 2 (usage) or 3 (diverged), never with
a traceback, and leaves no partial output file.

The values are few and chosen to hit the edges (0, negative, huge, NaN, text, missing
files, read-only places); the sizes stay small so that every example is quick.
Derandomized: the same examples every run, so CI is reproducible.
"""
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from portcore import registry, weights
from examples.cli import main

# The second tier (`make test-all`): generated command lines (hypothesis), each a subprocess.
pytestmark = pytest.mark.slow

EXIT_STATUSES = {0, 1, 2, 3}
SUFFIX = {"save": ".npz", "history": ".json", "gif": ".gif", "plot": ".png", "out": ".npz", "json": ".json"}
# Values that may work; then values that must not, one or two of which a command line
# gets on top, one time in two, so that about half of them train and the rest probe
# the errors (alone and in pairs). A repeated flag's last value wins, as in argparse.
VALUES = {
    "--dtype": ["float32", "float64"],
    "--epochs": ["0", "1", "3"],
    "--batch-size": ["30", "100", "7", "1000"],
    "--lr": ["1e6", "0.2", "0.01"],
    "--seed": ["0", "5", "4294967295"],
    "--devices": ["1", "1", "2"],          # 2: torch spawns DDP ranks, so rarely
    "--threads": ["1", "2"],               # 2: an error (exit 2) on a one-core machine
}
BAD = [("--dtype", "float16"), ("--device", "gpu"), ("--device", "tpu"), ("--epochs", "-1"),
       ("--epochs", "2.5"), ("--batch-size", "0"), ("--lr", "0"), ("--lr", "-1"), ("--lr", "nan"),
       ("--lr", "inf"), ("--lr", "x"), ("--seed", "-1"), ("--seed", "4294967296"), ("--model", "lstm"),
       ("--model", "sequential"), ("--init", "nan"), ("--init", "misshaped"), ("--init", "truncated"),
       ("--init", "missing"), ("name", "nope"), ("name", "tensor_interop"), ("--backend", "tensorflow"),
       ("--save", "missing dir"), ("--history", "directory"), ("--gif", "proc"), ("--plot", "wrong suffix"),
       ("--gif", "epochs 0"), ("--devices", "0"), ("--devices", "-2"), ("--devices", "5000"),
       ("--devices", "x"), ("--threads", "0"), ("--threads", "-1"), ("--threads", "100000"),
       ("--threads", "x")]


def output_path(root: Path, flag: str, kind: str) -> str:
    good = root / f"out-{flag}{SUFFIX[flag]}"
    return {"good": str(good), "missing dir": str(root / "missing" / good.name),
            "directory": str(root), "proc": f"/proc/x{SUFFIX[flag]}",
            "wrong suffix": str(good.with_suffix(".txt"))}[kind]


def init_file(root: Path, kind: str) -> str:
    params = registry.shared_init("linear_regression")
    if kind == "nan":
        params["linear.bias"] = np.array([np.nan])
    elif kind == "misshaped":
        params["linear.weight"] = np.zeros((2, 2))
    path = root / f"init-{kind}.npz"
    if kind == "truncated":
        weights.save(path, params)
        path.write_bytes(path.read_bytes()[:40])
    elif kind != "missing":
        weights.save(path, params)
    return str(path)


@st.composite
def command_lines(draw, root: Path, command: str):
    argv = [command]
    if command == "list":
        return argv
    if command == "bench":
        argv += draw(st.lists(st.sampled_from(["linear_regression", "logistic_regression", "nope"]),
                              max_size=2, unique=True))
        argv += ["--no-compile", "--sizes", draw(st.sampled_from(["tutorial", "bogus", ""]))]
        argv += ["--repeats", draw(st.sampled_from(["1", "0", "-3"]))]
        if draw(st.booleans()):
            argv += ["--devices", draw(st.sampled_from(["1", "0", "1,x", "9"]))]
        if draw(st.booleans()):
            argv += ["--json", output_path(root, "json", draw(st.sampled_from(["good", "proc", "missing dir"])))]
        return argv
    name = draw(st.sampled_from(list(registry.LADDER) * 2 + list(registry.DEMOS)))
    argv.append(name)
    if command == "init":
        if draw(st.booleans()):
            argv += ["--rng", draw(st.sampled_from(VALUES["--seed"] + ["-1", "x", "4294967296"]))]
        kind = draw(st.sampled_from(["good"] * 8 + ["missing dir", "directory", "proc", "wrong suffix"]))
        return argv + ["--out", output_path(root, "out", kind)]
    if command == "data":
        argv += ["--seed", draw(st.sampled_from(VALUES["--seed"] + ["-1", "x"]))]
        kind = draw(st.sampled_from(["good"] * 8 + ["missing dir", "directory", "proc", "wrong suffix"]))
        return argv + ["--out", output_path(root, "out", kind)]
    trains = name in registry.TRAINABLE
    argv += ["--backend", draw(st.sampled_from(["torch", "jax"]))] if command == "run" else []
    for flag, values in VALUES.items():
        if trains or flag in ("--dtype", "--seed"):
            if draw(st.sampled_from([False, False, True])):
                argv += [flag, draw(st.sampled_from(values))]
    for flag in ("--shuffle", "--quiet"):
        if (trains or flag == "--quiet") and draw(st.booleans()):
            argv.append(flag)
    if name == "neural_network" and draw(st.booleans()):
        argv += ["--model", "sequential"]
    if name == "linear_regression" and draw(st.sampled_from([False, False, True])):
        argv += ["--init", init_file(root, "good")]
    for flag in ("save", "gif", "plot", "history") if command == "run" else ():
        if (trains or flag == "history") and draw(st.sampled_from([False, False, True])):
            argv += [f"--{flag}", output_path(root, flag, "good")]
    n_bad = draw(st.sampled_from([0, 1, 0, 2]))
    for flag, bad in draw(st.lists(st.sampled_from(BAD), min_size=n_bad, max_size=n_bad)):
        if flag == "name":
            argv[1] = bad
        elif flag == "--init":
            argv += [flag, init_file(root, bad)]
        elif flag in ("--save", "--history", "--gif", "--plot"):
            argv += ([flag, output_path(root, flag[2:], "good"), "--epochs", "0"] if bad == "epochs 0"
                     else [flag, output_path(root, flag[2:], bad)])
        else:
            argv += [flag, bad]
    return argv


def requested_outputs(argv, root: Path) -> list[Path]:
    """The output files the command line names, the last of each flag's, in `root`."""
    flags = {"--save", "--history", "--gif", "--plot", "--out", "--json"}
    last = {f: Path(v) for f, v in zip(argv, argv[1:]) if f in flags}
    return [p for p in last.values() if p.parent == root and p.suffix]


# Command lines per subcommand: a valid bench measures for seconds, compare trains twice.
BUDGET = {"run": 30, "compare": 10, "data": 40, "init": 20, "list": 1, "bench": 5}


# The table, run first: each was a traceback or a NaN "success" once.
# (command line, its exit status)
TABLE = [(["run", "linear_regression", "--backend", "jax", "--init", "nan"], 2),
         (["run", "linear_regression", "--backend", "jax", "--lr", "1e6", "--save", "good",
           "--history", "good"], 3),
         (["run", "linear_regression", "--backend", "torch", "--lr", "1e6", "--plot", "good",
           "--gif", "good"], 3),
         (["run", "linear_regression", "--backend", "torch", "--save", "proc"], 2),
         (["run", "linear_regression", "--backend", "torch", "--seed", "-1"], 2)]


def table_line(root: Path, row: list[str]) -> list[str]:
    argv = list(row[:4])
    for flag, kind in zip(row[4::2], row[5::2]):
        argv += [flag, init_file(root, kind) if flag == "--init"
                 else output_path(root, flag[2:], kind) if flag[2:] in SUFFIX else kind]
    return argv


@pytest.mark.parametrize("command", BUDGET)
def test_any_command_line_ends_in_a_known_status_without_traceback(command, capsys):
    for row, expected in TABLE if command == "run" else []:
        with tempfile.TemporaryDirectory() as tmp:
            assert check_argv(table_line(Path(tmp), row), Path(tmp), capsys) == expected, row

    def one(data):
        with tempfile.TemporaryDirectory() as tmp:
            code = check_argv(data.draw(command_lines(Path(tmp), command), label="argv"), Path(tmp), capsys)
        event(f"{command}: exit {code}")                 # pytest --hypothesis-show-statistics
    settings(max_examples=BUDGET[command], deadline=None, derandomize=True, database=None,
             suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])(
        given(data=st.data())(one))()


def check_argv(argv, root: Path, capsys) -> int:
    before = {p.name for p in root.iterdir()}                          # the init files
    code = main(argv)                                                  # an exception fails the test
    _, err = capsys.readouterr()
    assert code in EXIT_STATUSES and "Traceback" not in err, (argv, code, err)
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("error")]
    if code == 2:
        assert len(lines) == 1 and err.rstrip().splitlines()[-1].startswith("error: "), (argv, err)
    if code == 3:
        assert lines[-1].startswith("error: training diverged"), (argv, err)
    left = {p.name for p in root.iterdir()} - before
    assert not [n for n in left if n.startswith(".")], (argv, left)              # no temporary files
    wanted = {p.name for p in requested_outputs(argv, root)}
    if code == 0:
        assert left == wanted, (argv, left, wanted)
    else:                                      # a diverged run keeps only its history
        allowed = {n for n in wanted if n.endswith(".json")} if code == 3 else set()
        assert left <= allowed, (argv, code, left)
    return code
