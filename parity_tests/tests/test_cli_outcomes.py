"""The command line on unusual input: bad values (exit 2), diverging runs (exit 3,
nothing saved), long runs and Ctrl-C (exit 130), each in one line with no traceback."""
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from portcore import schedule, specs, weights
from parity_tests.tests.test_cli import assert_usage_error, run_cli

LINEAR = ("run", "linear_regression")


def outputs(tmp_path):
    return {"save": tmp_path / "p.npz", "history": tmp_path / "h.json", "gif": tmp_path / "a.gif",
            "plot": tmp_path / "f.png"}


def flags(paths):
    return [a for flag, path in paths.items() for a in (f"--{flag}", path)]


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_non_finite_initial_weights_are_named(backend, tmp_path, capsys):
    init = tmp_path / "nan.npz"
    weights.save(init, {"linear.weight": np.array([[np.nan]]), "linear.bias": np.array([np.inf])})
    code, out, err = run_cli(capsys, *LINEAR, "--backend", backend, "--init", init, *flags(outputs(tmp_path)))
    assert_usage_error(code, err, "non-finite initial weights", "linear.weight (1 NaN)", "linear.bias (1 +inf)")
    assert out == "" and sorted(p.name for p in tmp_path.iterdir()) == ["nan.npz"]


@pytest.mark.parametrize("value", ["-1", str(2 ** 32), "99999999999999999999"])
def test_seed_out_of_range(value, capsys):
    code, _, err = run_cli(capsys, *LINEAR, "--backend", "torch", "--seed", value)
    assert_usage_error(code, err, "--seed", "from 0 to 4294967295")


@pytest.mark.parametrize("flag", ["save", "history", "gif", "plot"])
def test_unwritable_outputs_fail_before_training(flag, tmp_path, capsys):
    suffix = outputs(tmp_path)[flag].suffix
    (tmp_path / f"dir{suffix}").mkdir()
    cases = {"/proc (no files can be made there)": (f"/proc/x{suffix}", "cannot create a file in /proc"),
             "a missing directory": (tmp_path / "missing" / f"x{suffix}", "no such directory"),
             "a directory": (tmp_path / f"dir{suffix}", "is a directory")}
    for path, message in cases.values():
        # --epochs 10**8 would take hours: failing fast proves nothing trained.
        code, out, err = run_cli(capsys, *LINEAR, "--backend", "jax", "--epochs", 10 ** 8, f"--{flag}", path)
        assert_usage_error(code, err, f"--{flag}", message)
        assert out == ""
    assert [p.name for p in tmp_path.iterdir()] == [f"dir{suffix}"]


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_diverging_run_exits_3_with_its_history_and_nothing_else(backend, tmp_path, capsys):
    paths = outputs(tmp_path)
    code, _, err = run_cli(capsys, *LINEAR, "--backend", backend, "--lr", "1e6", "--quiet", *flags(paths))
    assert code == 3 and err.count("\n") == 1 and "Traceback" not in err
    assert "training diverged at step 4 (epoch 4)" in err and "smaller --lr" in err
    history = json.loads(paths["history"].read_text())                # strict JSON: NaN is null
    assert history["diverged_at_step"] == 3 and history["step_losses"][3] is None
    assert all(v is not None for v in history["step_losses"][:3])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.json"]     # no weights, plot or GIF


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_long_diverging_run_stops_after_its_chunk(backend, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(schedule, "CHUNK_STEPS", 16)
    code, _, err = run_cli(capsys, *LINEAR, "--backend", backend, "--lr", "1e6", "--epochs", 10 ** 8,
                           "--quiet", "--history", tmp_path / "h.json")
    assert code == 3 and "stopped after epoch 16 of 100000000" in err
    assert json.loads((tmp_path / "h.json").read_text())["epochs_run"] == 16


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_long_run_gif_is_drawn_from_kept_epochs(backend, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(schedule, "MAX_RECORDED_EPOCHS", 20)
    monkeypatch.setattr(schedule, "CHUNK_STEPS", 64)
    code, out, _ = run_cli(capsys, "run", "logistic_regression", "--backend", backend, "--epochs", 1000,
                           "--quiet", "--gif", tmp_path / "a.gif", "--history", tmp_path / "h.json")
    assert code == 0 and "1000 epochs, 1000 steps" in out
    history = json.loads((tmp_path / "h.json").read_text())
    assert len(history["epoch_losses"]) == 20 and history["recorded_epochs"][-1] == 999
    from PIL import Image
    with Image.open(tmp_path / "a.gif") as im:
        assert im.n_frames == 20


@pytest.mark.slow    # second tier: a run interrupted in a subprocess
def test_ctrl_c_ends_quietly_with_130(tmp_path):
    # `python -m examples`, with Ctrl-C's handler put back: a shell without job control
    # starts background jobs with SIGINT ignored, and Python keeps it ignored.
    main = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "runpy.run_module('examples', run_name='__main__')")
    proc = subprocess.Popen([sys.executable, "-c", main, "run", "linear_regression", "--backend", "jax",
                             "--epochs", str(10 ** 8), "--history", str(tmp_path / "h.json"),
                             "--save", str(tmp_path / "p.npz")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(8)                               # importing jax and compiling take a few seconds
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and err.rstrip().splitlines()[-1].split("\r")[-1].strip() == "interrupted"
    assert list(tmp_path.iterdir()) == []


def test_a_write_that_fails_after_training_is_one_line(tmp_path, capsys, monkeypatch):
    """Outputs are checked before training; a disk that fills up during it still gets
    one line, not a traceback."""
    import errno

    def disk_full(path, write):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(weights, "atomic_write", disk_full)
    code, _, err = run_cli(capsys, *LINEAR, "--backend", "torch", "--epochs", 1, "--quiet",
                           "--save", tmp_path / "p.npz")
    assert_usage_error(code, err, "p.npz: No space left on device")
