"""Checkpoints and --resume: a run interrupted (at a checkpoint, or by SIGKILL at a
random step) and resumed ends bit for bit where the uninterrupted run ends, on both
backends, in both dtypes, jaxport's chunked runs included; bad checkpoints are refused
in one line with exit status 2. (Ranks dying with their parent, atomic writes:
test_faults.py.)"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from portcore import checkpoint, schedule, weights
from examples.cli import main

# The second tier (`make test-all`): checkpoints and resumed runs, killed at random steps.
pytestmark = pytest.mark.slow

ROOT = str(Path(__file__).resolve().parents[2])
# One torch thread, as the suite's own (conftest.py): on a loaded 2-core machine two
# threads make eager steps 10-30x slower.
ENV = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    return out


def same_run(full_dir, resumed_dir, start):
    """The resumed run's fitted weights are the uninterrupted run's, and its steps'
    losses are the uninterrupted run's from epoch `start` on, bit for bit."""
    full, resumed = weights.load(full_dir / "w.npz"), weights.load(resumed_dir / "w.npz")
    assert full.keys() == resumed.keys()
    for name in full:
        assert np.array_equal(full[name], resumed[name]), name
    h, r = (json.loads((d / "h.json").read_text()) for d in (full_dir, resumed_dir))
    per_epoch = len(h["step_losses"]) // h["epochs_run"]
    assert r["start_epoch"] == start and r["epochs_run"] == h["epochs_run"] - start
    assert r["step_losses"] == h["step_losses"][start * per_epoch:]
    assert r["recorded_epochs"] == list(range(start, h["epochs_run"]))


def dirs(tmp_path, *names):
    out = [tmp_path / n for n in names]
    for d in out:
        d.mkdir()
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_a_resumed_run_ends_where_the_uninterrupted_run_ends(backend, dtype, tmp_path, capsys, monkeypatch):
    """neural_network (Adam: moments and step count), shuffled (the generator's state),
    a partial last batch: 3 epochs with checkpoints at 2 and 3, resumed to 7. jax runs in
    chunks of 2 epochs (CHUNK_STEPS shrunk): the three runs cut their chunks differently."""
    monkeypatch.setattr(schedule, "CHUNK_STEPS", 8)
    full, part, resumed = dirs(tmp_path, "full", "part", "resumed")
    flags = ["--shuffle", "--batch-size", 30, "--seed", 5, "--quiet"]
    run_cli(capsys, "run", "neural_network", "--backend", backend, "--dtype", dtype, "--epochs", 7, *flags,
            "--save", full / "w.npz", "--history", full / "h.json")
    run_cli(capsys, "run", "neural_network", "--backend", backend, "--dtype", dtype, "--epochs", 3, *flags,
            "--checkpoint", part / "ck.safetensors", "--checkpoint-every", 2)
    meta = checkpoint.load(part / "ck.safetensors")[0]
    assert (meta["epoch"], meta["checkpoint_every"], meta["dtype"]) == (3, 2, dtype)
    out = run_cli(capsys, "run", "--resume", part / "ck.safetensors", "--epochs", 7, "--quiet",
                  "--save", resumed / "w.npz", "--history", resumed / "h.json")
    assert f"{backend} neural_network ({dtype}, cpu): 4 epochs (resumed at epoch 3)" in out
    same_run(full, resumed, 3)
    assert checkpoint.load(part / "ck.safetensors")[0]["epoch"] == 7       # it went on checkpointing there


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_cnn_resumes_with_its_dropout_counter_batchnorm_and_momentum(backend, tmp_path, capsys):
    """cnn: BatchNorm's running statistics, the dropout masks' step counter and SGD's
    momentum buffers travel in the checkpoint; 2 epochs = 1 + 1 resumed."""
    full, part, resumed = dirs(tmp_path, "full", "part", "resumed")
    flags = ["--backend", backend, "--shuffle", "--batch-size", 256, "--quiet"]
    run_cli(capsys, "run", "cnn", *flags, "--epochs", 2, "--save", full / "w.npz", "--history", full / "h.json")
    run_cli(capsys, "run", "cnn", *flags, "--epochs", 1, "--checkpoint", part / "ck.npz")
    _, params, opt_state = checkpoint.load(part / "ck.npz")
    assert any(k.startswith("momentum_buffer/") for k in opt_state)
    assert float(params["drop.step"].reshape(-1)[0]) > 0
    run_cli(capsys, "run", "cnn", "--resume", part / "ck.npz", "--epochs", 2, "--quiet",
            "--save", resumed / "w.npz", "--history", resumed / "h.json")
    same_run(full, resumed, 1)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_a_finished_600_epoch_run_resumed_to_1000(backend, dtype, tmp_path, capsys):
    """linear_regression, shuffled (one batch of 100: the order changes the sums' order):
    a 600-epoch run that finished (its last checkpoint at the end) continues to 1000
    epochs as if it had been asked for 1000 from the start."""
    full, part, resumed = dirs(tmp_path, "full", "part", "resumed")
    flags = ["--backend", backend, "--dtype", dtype, "--shuffle", "--quiet"]
    run_cli(capsys, "run", "linear_regression", *flags, "--epochs", 1000, "--save", full / "w.npz",
            "--history", full / "h.json")
    run_cli(capsys, "run", "linear_regression", *flags, "--epochs", 600, "--checkpoint", part / "ck.npz",
            "--checkpoint-every", 250)
    run_cli(capsys, "run", "--resume", part / "ck.npz", "--epochs", 1000, "--quiet",
            "--save", resumed / "w.npz", "--history", resumed / "h.json")
    same_run(full, resumed, 600)


def test_torch_ddp_checkpoints_from_rank_0_and_resumes(tmp_path, capsys):
    """run --devices 2: rank 0 writes the checkpoint; resumed on 2 ranks, the run is the
    uninterrupted 2-rank run."""
    full, part, resumed = dirs(tmp_path, "full", "part", "resumed")
    flags = ["--backend", "torch", "--devices", 2, "--dtype", "float64", "--shuffle", "--batch-size", 20, "--quiet"]
    run_cli(capsys, "run", "logistic_regression", *flags, "--epochs", 6, "--save", full / "w.npz",
            "--history", full / "h.json")
    run_cli(capsys, "run", "logistic_regression", *flags, "--epochs", 4, "--checkpoint", part / "ck.npz",
            "--checkpoint-every", 3)
    assert checkpoint.load(part / "ck.npz")[0]["epoch"] == 4
    run_cli(capsys, "run", "--resume", part / "ck.npz", "--epochs", 6, "--quiet", "--save", resumed / "w.npz",
            "--history", resumed / "h.json")
    same_run(full, resumed, 4)


def cli(*argv, **kw):
    return subprocess.Popen([sys.executable, "-m", "examples", "run", *map(str, argv)], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.parametrize("backend, epochs", [("torch", 400), ("jax", 4000)])
def test_a_run_killed_at_a_random_step_resumes_bit_for_bit(backend, epochs, tmp_path):
    """A real `python -m examples run`, SIGKILLed at a random moment after its first
    checkpoint, resumed from the last checkpoint it wrote: the uninterrupted run's
    weights and per-step losses."""
    full, part, resumed = dirs(tmp_path, "full", "part", "resumed")
    flags = ["neural_network", "--backend", backend, "--shuffle", "--batch-size", 50, "--quiet", "--epochs", epochs]
    reference = cli(*flags, "--save", full / "w.npz", "--history", full / "h.json")
    every = epochs // 40
    victim = cli(*flags, "--checkpoint", part / "ck.npz", "--checkpoint-every", every, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (part / "ck.npz").exists() and time.monotonic() < deadline and victim.poll() is None:
            time.sleep(0.05)
        time.sleep(random.Random().uniform(0, 0.5))
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
    finally:
        victim.kill()
    assert victim.returncode == -signal.SIGKILL
    start = checkpoint.load(part / "ck.npz")[0]["epoch"]
    assert 0 < start < epochs and start % every == 0
    done = subprocess.run([sys.executable, "-m", "examples", "run", "--resume", str(part / "ck.npz"), "--quiet",
                           "--save", str(resumed / "w.npz"), "--history", str(resumed / "h.json")],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert reference.wait(600) == 0, reference.stderr.read()[-3000:]
    print(f"{backend}: killed after epoch {start} of {epochs}, resumed")
    same_run(full, resumed, start)


def rewritten(src, dst, **meta_changes):
    """A copy of checkpoint `src` with its meta changed (None deletes an entry)."""
    arrays = weights.load(src)
    meta = json.loads(arrays[checkpoint.META].tobytes().decode())
    meta.update(meta_changes)
    arrays[checkpoint.META] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    weights.save(dst, arrays)
    return dst


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    """A neural_network float32 checkpoint at epoch 2 of 4 (torch)."""
    path = tmp_path_factory.mktemp("ck") / "ck.npz"
    assert main(["run", "neural_network", "--backend", "torch", "--epochs", "2", "--quiet",
                 "--checkpoint", str(path)]) == 0
    return path


def bad_cases(good, tmp):
    """(argv after `run`, what the one line must say)."""
    truncated = tmp / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    weights.save(tmp / "weights.npz", {k: v for k, v in weights.load(good).items() if not k.startswith(("checkpoint/", "optimizer/"))})
    float64 = weights.load(good)
    float64.update({k: v.astype(np.float64) for k, v in float64.items() if k != checkpoint.META})
    weights.save(tmp / "f64.npz", float64)
    no_moment = {k: v for k, v in weights.load(good).items() if not k.startswith("optimizer/exp_avg_sq/")}
    weights.save(tmp / "no_moment.npz", no_moment)
    return [
        (["linear_regression", "--backend", "torch", "--resume", good], "a checkpoint of neural_network, not linear_regression"),
        (["--resume", good, "--dtype", "float64"], "--dtype float32, which a resumed run keeps (given: float64)"),
        (["--resume", good, "--lr", "0.5"], "--lr 0.01, which a resumed run keeps"),
        (["--resume", rewritten(good, tmp / "sgd.npz", optimizer="sgd")], "optimizer sgd; neural_network trains with adam"),
        (["--resume", rewritten(good, tmp / "v2.npz", version=2)], "a version 2 checkpoint; this program reads version 1"),
        (["--resume", rewritten(good, tmp / "cnn.npz", example="cnn", optimizer="sgd")], "a checkpoint of cnn (sgd) that does not fit it"),
        (["--resume", tmp / "f64.npz"], "a float32 checkpoint holding float64 arrays"),
        (["--resume", tmp / "no_moment.npz"], "missing exp_avg_sq/hidden_1.weight"),
        (["--resume", truncated], "not a readable .npz"),
        (["--resume", tmp / "weights.npz"], "not a checkpoint"),
        (["--resume", tmp / "missing.npz"], "no such file"),
        (["--resume", good, "--epochs", "1"], "is at epoch 2 already"),
        (["--resume", good, "--init", good], "--init not applicable"),
        (["neural_network", "--backend", "torch", "--checkpoint-every", "3"], "--checkpoint-every needs --checkpoint"),
        (["--backend", "torch"], "required: NAME"),
        (["neural_network", "--backend", "jax", "--checkpoint", tmp / "ck.json"], "the file must end in .npz or .safetensors"),
    ]


def test_bad_checkpoints_are_refused_in_one_line(good_checkpoint, tmp_path, capsys):
    """Another example, dtype, optimizer or version, a truncated or damaged file, a flag
    that would change the run: exit 2, one line on stderr, no traceback, no output."""
    before = good_checkpoint.read_bytes()
    for argv, message in bad_cases(good_checkpoint, tmp_path):
        save = tmp_path / "out.npz"
        code = main(["run", *map(str, argv), "--quiet", "--save", str(save)])
        _, err = capsys.readouterr()
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, (argv, err)
        assert message in err and "Traceback" not in err, (argv, err)
        assert not save.exists()
    assert good_checkpoint.read_bytes() == before
