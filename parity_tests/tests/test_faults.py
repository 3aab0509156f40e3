"""Faults survived: ranks die with their parent however it dies, and every output file
is written atomically, so a SIGKILL at any moment leaves the old file or the new one.
(Resuming from checkpoints: test_resume.py.)"""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from portcore import weights

# The second tier (`make test-all`): faults: processes killed at random moments.
pytestmark = pytest.mark.slow

ROOT = str(Path(__file__).resolve().parents[2])
ENV = dict(os.environ, PYTHONPATH=ROOT)


def gone(procs, timeout) -> tuple[list, float]:
    """Wait until every process has exited (a zombie has: only its parent's wait is
    missing, and an orphan's new parent may be slow to reap it); (alive, seconds)."""
    start = time.perf_counter()
    while True:
        alive = []
        for p in procs:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.perf_counter() - start > timeout:
            return alive, time.perf_counter() - start
        time.sleep(0.05)


@pytest.mark.parametrize("after", [0.0, 3.0])
def test_sigkill_of_a_ddp_run_leaves_no_process_behind(after):
    """`run --devices 2` killed with SIGKILL (no handler, no `finally` runs), as soon as
    its ranks exist (still importing torch) or in training: both torch ranks, and every
    other process it started, are gone within 10 s."""
    proc = subprocess.Popen([sys.executable, "-m", "examples", "run", "neural_network", "--backend", "torch",
                             "--devices", "2", "--epochs", str(10 ** 6), "--quiet"], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        ranks, started = [], time.perf_counter()
        while len(ranks) < 2 and time.perf_counter() - started < 120:      # imports, spawn, rendezvous
            time.sleep(0.2)
            ranks = [p for p in psutil.Process(proc.pid).children(recursive=True)
                     if "spawn_main" in " ".join(p.cmdline()) and "resource_tracker import" not in " ".join(p.cmdline())]
        assert len(ranks) == 2, "the ranks never started"
        time.sleep(after)
        everything = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        alive, seconds = gone(everything, timeout=10)
        print(f"{len(everything)} processes gone {seconds:.2f} s after the SIGKILL ({after} s after start)")
        assert alive == [], [" ".join(p.cmdline()) for p in alive]
    finally:
        proc.kill()
        try:
            os.killpg(proc.pid, signal.SIGKILL)                              # whatever is left, if the test failed
        except ProcessLookupError:
            pass


CHILD = """
import os, sys, time
from portcore import lifeline
if sys.argv[1] == "watchdog":
    sys.platform = "darwin"                         # the path without prctl
lifeline.die_with_parent(int(sys.argv[2]))
print("started", flush=True)
time.sleep(60)
"""

PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2], str(__import__("os").getpid())])
print(child.pid, flush=True)
time.sleep(60)
"""


def test_a_child_dies_with_its_parent_by_prctl_and_by_the_watchdog():
    """portcore.lifeline in a grandchild: the parent SIGKILLed, the child follows, by the
    kernel's parent-death signal (Linux) and by the parent check (elsewhere)."""
    for how in ("prctl", "watchdog"):
        parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, how], cwd=ROOT, env=ENV,
                                  stdout=subprocess.PIPE, text=True, start_new_session=True)
        try:
            child = psutil.Process(int(parent.stdout.readline()))
            time.sleep(1.5)                                 # the child past die_with_parent
            assert child.is_running()
            parent.kill()
            parent.wait(10)
            alive, seconds = gone([child], timeout=10)
            assert alive == [], how
            print(f"{how}: the child ended {seconds:.2f} s after its parent")
        finally:
            os.killpg(parent.pid, signal.SIGKILL)


def test_a_child_whose_parent_died_before_it_started_exits_at_once():
    """The race: the parent gone before prctl; the child's parent is then not the pid
    it was given."""
    done = subprocess.run([sys.executable, "-c", CHILD, "prctl", "1"], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "started" not in done.stdout


WRITER = """
import sys
import numpy as np
from portcore import weights
target = sys.argv[1]
for k in range(1, 10 ** 6):
    weights.save(target, {"a": np.full(2 ** 20, float(k)), "b": np.full(7, float(k)), "k": np.asarray(float(k))})
"""


def test_sigkill_at_any_moment_leaves_the_old_file_or_the_new_one(tmp_path):
    """A writer saving an 8 MiB file over and over, killed at random moments: the
    target is always absent (before the first rename) or a whole, loadable file of one
    write; the only other names are the killed writers' hidden temporary files, which
    the next write removes."""
    target = tmp_path / "w.npz"
    rng, mid_write = random.Random(0), 0
    for attempt in range(12):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], cwd=ROOT, env=ENV)
        time.sleep(0.4 + rng.random() * 0.6)                # imports take ~0.2-0.4 s
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
        if target.exists():
            w = weights.load(target)
            k = float(w["k"].reshape(-1)[0])
            assert w["a"].shape == (2 ** 20,) and np.all(w["a"] == k) and np.all(w["b"] == k)
        others = [p.name for p in tmp_path.iterdir() if p != target]
        assert all(n.startswith(f".w.npz.tmp-{writer.pid}-") for n in others), others
        mid_write += bool(others)
    print(f"{mid_write} of 12 kills hit a write in progress")
    assert mid_write >= 2, "the kills never hit a write: the test proves nothing"
    weights.save(target, {"k": np.asarray(0.0)})           # the next writer removes stale temporaries
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]


def test_every_output_file_is_renamed_into_place(tmp_path, monkeypatch, capsys):
    """--save, --history, --gif, --plot, --checkpoint and `data --out`: each file
    appears by one rename of its writer's hidden temporary file (weights.atomic_write),
    never by writing the target itself."""
    from examples.cli import main
    renames = []
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renames.append((Path(src), Path(dst))), replace(src, dst)))
    outputs = {"--save": "w.safetensors", "--history": "h.json", "--gif": "a.gif", "--plot": "p.png",
               "--checkpoint": "ck.npz"}
    argv = ["run", "logistic_regression", "--backend", "jax", "--epochs", "3", "--quiet"]
    assert main(argv + [str(a) for flag, name in outputs.items() for a in (flag, tmp_path / name)]) == 0
    assert main(["data", "linear_regression", "--out", str(tmp_path / "d.npz")]) == 0
    capsys.readouterr()
    written = {dst.name: src.name for src, dst in renames}
    for name in [*outputs.values(), "d.npz"]:
        assert written.get(name, "").startswith(f".{name}.tmp-{os.getpid()}-"), (name, written)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*outputs.values(), "d.npz"])
