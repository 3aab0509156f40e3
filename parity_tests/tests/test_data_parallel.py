"""Data parallel on N devices (jaxport/parallel.py: jax.sharding; torchref/parallel.py:
DistributedDataParallel over gloo) computes what one device computes: per-step losses
and fitted weights within the single-step tolerance (float64, 1e-10 relative), ragged
batches included (padded to N equal shards, the loss the global weighted mean), and a
per-shard mean, the classic mistake, fails. The suite has 4 host CPU devices
(conftest.py); the default device's numbers are those of a one-device process.

Fast cells run in `make test`; the full-length compare cells only in `make report`.
"""
import hashlib
import json
import os
import socket
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import psutil
import pytest

import jaxport.parallel as jp
import jaxport.training as jt
from jaxport.programs import DEFAULT
import torchref.parallel as tp
import torchref.training as tt
from portcore import registry, specs, weights
from examples.cli import main

# The second tier (`make test-all`): data parallel: DDP processes and several JAX devices.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOL = 1e-10                 # the float64 single-step tolerance (parity.py's table)
REPORT = bool(os.environ.get("JAXPORT_REPORT"))


def fit(backend, example, devices, batch_size=20, epochs=10, dtype="float64"):
    x, y = registry.make_data(example)
    config = registry.get(example).defaults.replace(epochs=epochs, batch_size=batch_size, shuffle=True)
    order = specs.batch_order(len(x), epochs, True)
    return backend.fit(example, registry.shared_init(example), x, y, order, config, dtype=dtype, devices=devices)


def ranks_left() -> list:
    """Our child processes, but multiprocessing's resource tracker: one per parent, started
    with the first spawn and meant to live until the parent exits."""
    return [p for p in psutil.Process().children(recursive=True)
            if "resource_tracker import" not in " ".join(p.cmdline())]


def rel(a, b) -> float:
    """max |a - b| / max |b|, over the per-step losses or each parameter tensor."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def difference(r, one) -> tuple[float, float]:
    losses = float(np.max(np.abs(r.step_losses - one.step_losses) / np.abs(one.step_losses)))
    return losses, max(rel(r.params[k], one.params[k]) for k in one.params)


@pytest.mark.parametrize("example", ["logistic_regression", "neural_network"])
def test_jaxport_on_2_and_4_devices_matches_one_device(example):
    one = fit(jt, example, 1)
    for n in (2, 4):
        r = fit(jt, example, n)
        losses, params = difference(r, one)
        assert losses <= TOL and params <= TOL, (n, losses, params)
        assert r.step_losses.shape == one.step_losses.shape == (50,)
    # It is really split: the program spans 4 devices and all-reduces across them.
    [program] = [p for k, p in DEFAULT.compiled().items() if k[0] == example and len(k[-2]) == 4]
    assert "all-reduce" in program.as_text()
    assert {d.id for d in jax.devices()} == {0, 1, 2, 3}


@pytest.mark.parametrize("devices", [2, pytest.param(4, marks=pytest.mark.skipif(
    not REPORT, reason="4 torch ranks on 2 cores are slow: `make report`"))])
@pytest.mark.parametrize("example", ["logistic_regression", "neural_network"])
def test_torch_ddp_matches_one_process(example, devices):
    one, r = fit(tt, example, 1), fit(tt, example, devices)
    losses, params = difference(r, one)
    assert losses <= TOL and params <= TOL, (losses, params)
    assert ranks_left() == []


# Batch 40 over 100 rows: batches of 40, 40, 20. On 3 devices each batch is padded to
# 42 rows, shards of 14 (real rows 14, 14, 12; the last batch 14, 6, 0); on 4 devices
# shards of 10 (the last batch 10, 10, 0, 0). A mean of per-shard means would weigh
# the rows of short shards more.
RAGGED = dict(example="logistic_regression", batch_size=40, epochs=5)


def test_ragged_batches_follow_the_global_weighted_mean():
    one = fit(jt, **RAGGED, devices=1)
    assert jp.shard_size(40, 3) == 14
    idx, weight = jp.sharded_indices(specs.batch_order(100, 1, True), 40, 3)
    assert idx.shape == (1, 3, 42) and weight[:, :, 0].sum(axis=1).tolist() == [40, 40, 20]
    for backend, n in ((jt, 3), (jt, 4), (tt, 3)):
        losses, params = difference(fit(backend, **RAGGED, devices=n), one)
        assert losses <= TOL and params <= TOL, (backend.__name__, n, losses, params)


def _per_shard_weights(real):
    """Planted bug (jaxport): weights 1 / (the shard's real rows), so the weighted mean
    becomes the mean of per-shard means."""
    def planted(order, batch_size, devices):
        idx, weight = real(order, batch_size, devices)
        shards = weight.reshape(weight.shape[0], devices, -1).astype(np.float64)
        counts = shards.sum(axis=2, keepdims=True)
        return idx, np.where(counts > 0, shards / np.maximum(counts, 1), 0.0).reshape(weight.shape)
    return planted


def per_rank_mean(world, batch_rows, rank_rows):
    """Planted bug (torch): each rank's own mean; DDP then averages the ranks' means."""
    return 1.0 / rank_rows if rank_rows else 0.0


def test_a_per_shard_mean_fails_the_ragged_test(monkeypatch):
    one = fit(jt, **RAGGED, devices=1)
    jt.clear_caches()                        # the planted weights are float: a new program
    monkeypatch.setattr(jp, "sharded_indices", _per_shard_weights(jp.sharded_indices))
    monkeypatch.setattr(tp, "rank_weight", per_rank_mean)   # pickled by name to the ranks
    try:
        for backend in (jt, tt):
            losses, _ = difference(fit(backend, **RAGGED, devices=3), one)
            assert losses > 1e-3, (backend.__name__, losses)     # far outside 1e-10
    finally:
        monkeypatch.undo()
        jt.clear_caches()


def test_an_error_in_a_rank_leaves_no_process_behind():
    x, y = registry.make_data("logistic_regression")
    config = registry.get("logistic_regression").defaults.replace(epochs=2, batch_size=20)
    order = np.tile(np.arange(len(x)), (2, 1))
    order[1, 85] = 10_000                    # in rank 0's shard of epoch 1's last batch: IndexError
    with pytest.raises(IndexError) as caught:
        tt.fit("logistic_regression", registry.shared_init("logistic_regression"), x, y, order, config,
               dtype="float64", devices=2)
    assert "DDP rank 0 of 2" in "".join(caught.value.__notes__)
    assert ranks_left() == []


def test_compare_on_2_devices_agrees(capsys):
    code = main(["compare", "logistic_regression", "--dtype", "float64", "--epochs", "20",
                 "--shuffle", "--batch-size", "20", "--devices", "2", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "2 devices" in out and "VERDICT: agree" in out, out


@pytest.mark.skipif(not REPORT, reason="the full-length compare runs in `make report`")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_compare_neural_network_on_2_devices_agrees(capsys, dtype):
    code = main(["compare", "neural_network", "--dtype", dtype, "--devices", "2", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "VERDICT: agree" in out, out


@pytest.mark.parametrize("argv,message", [
    (["--devices", "0"], "must be at least 1"),
    (["--devices", "200"], "more devices than rows in a batch"),
    (["--devices", "8", "--batch-size", "20"], "JAX sees 4 cpu device(s)"),
    (["--device", "gpu", "--devices", "2"], "GPU"),
])
def test_bad_devices_exit_2_in_one_line(capsys, argv, message):
    if "gpu" in argv and any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("this machine has a GPU")
    code = main(["run", "logistic_regression", "--backend", "jax", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_more_torch_processes_than_memory_holds_exit_2_before_any_start(capsys, monkeypatch):
    from examples import commands
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    monkeypatch.setattr(commands, "RANK_BYTES", memory // 2 + 1)    # 2 ranks: just over the memory
    before = len(psutil.Process().children(recursive=True))
    code = main(["run", "logistic_regression", "--backend", "torch", "--devices", "2"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "2 torch processes need about" in err, err
    assert len(psutil.Process().children(recursive=True)) == before
    monkeypatch.setattr(commands, "RANK_BYTES", memory // 2 - 1)    # just under: runs
    assert main(["run", "logistic_regression", "--backend", "torch", "--devices", "2", "--epochs", "1",
                 "--quiet"]) == 0


def _bits(result) -> str:
    h = hashlib.sha1(result.step_losses.tobytes())
    for k in sorted(result.params):
        h.update(result.params[k].tobytes())
    return h.hexdigest()


ONE_DEVICE = """
import hashlib, sys, jax
from parity_tests.tests.test_data_parallel import fit, _bits
import jaxport.training as jt, jaxport.numerics as n
n.pin_numerics()
print(len(jax.devices()), " ".join(_bits(fit(jt, "neural_network", 1, dtype=d)) for d in ("float32", "float64")))
"""


def test_the_default_device_computes_what_a_one_device_process_computes():
    env = dict(os.environ, XLA_FLAGS="--xla_gpu_deterministic_ops=true", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", ONE_DEVICE], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    devices, bits = proc.stdout.split()[-3], proc.stdout.split()[-2:]
    assert devices == "1" and len(jax.devices()) == 4
    assert bits == [_bits(fit(jt, "neural_network", 1, dtype=d)) for d in ("float32", "float64")]


def test_two_processes_of_two_devices_match_one_device(tmp_path):
    """jax.distributed over localhost (gloo CPU collectives): the CLI in 2 processes,
    each with 2 host devices, one mesh of 4."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    weights.save(tmp_path / "init.npz", registry.shared_init("logistic_regression"))
    argv = [sys.executable, "-m", "examples", "run", "logistic_regression", "--backend", "jax",
            "--devices", "4", "--dtype", "float64", "--shuffle", "--batch-size", "20", "--quiet",
            "--init", str(tmp_path / "init.npz")]
    procs = [subprocess.Popen(argv + ["--history", str(tmp_path / f"p{i}.json")], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=dict(os.environ, XLA_FLAGS="", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                                       JAXPORT_NUM_PROCESSES="2", JAXPORT_PROCESS_ID=str(i), PYTHONPATH=ROOT))
             for i in range(2)]
    try:
        outs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], outs
    one = fit(jt, "logistic_regression", 1, epochs=100)
    for i in range(2):
        h = json.loads((tmp_path / f"p{i}.json").read_text())
        assert h["devices"] == 4 and "cpu x4" in outs[i]
        assert rel(h["step_losses"], one.step_losses) <= TOL
        assert max(rel(h["params"][k], one.params[k]) for k in one.params) <= TOL


def test_ctrl_c_ends_every_rank(tmp_path):
    """The CLI's torch DDP run, interrupted: exit 130, and no rank outlives it. (SIGINT's
    handler is put back: background shells start jobs with it ignored.)"""
    main_ = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "runpy.run_module('examples', run_name='__main__')")
    proc = subprocess.Popen([sys.executable, "-c", main_, "run", "linear_regression", "--backend", "torch",
                             "--devices", "2", "--epochs", str(10 ** 6), "--quiet",
                             "--save", str(tmp_path / "p.npz")], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ranks = []
        for _ in range(300):                    # until both ranks have started
            ranks = [p for p in psutil.Process(proc.pid).children(recursive=True)
                     if "spawn_main" in " ".join(p.cmdline()) and "resource_tracker import" not in " ".join(p.cmdline())]
            if len(ranks) == 2:
                break
            time.sleep(0.1)
        assert len(ranks) == 2
        time.sleep(2)                           # into training
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and err.rstrip().endswith("interrupted"), err[-2000:]
    _, alive = psutil.wait_procs(ranks, timeout=10)
    assert alive == [] and list(tmp_path.iterdir()) == []
