"""`python -m examples`: outputs, round trips, and one-line errors with exit status 2."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from portcore import registry, specs, weights
from examples.cli import main


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_usage_error(code, err, *fragments):
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_list_names_every_example(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0 and out.split() == list(registry.NAMES)


def test_data_writes_what_the_backends_receive(tmp_path, capsys):
    code, _, _ = run_cli(capsys, "data", "neural_network", "--seed", 3, "--out", tmp_path / "d.npz")
    assert code == 0
    x, y = registry.make_data("neural_network", seed=3)
    with np.load(tmp_path / "d.npz") as f:
        assert np.array_equal(f["x"], x) and np.array_equal(f["y"], y) and f["x"].dtype == np.float64


BAD_ARGS = [
    (["run", "no_such_example", "--backend", "torch"], "invalid choice: 'no_such_example'"),
    (["run", "linear_regression", "--backend", "tensorflow"], "invalid choice: 'tensorflow'"),
    (["run", "linear_regression", "--backend", "torch", "--batch-size", "0"], "--batch-size: must be at least 1"),
    (["run", "linear_regression", "--backend", "jax", "--epochs", "-1"], "--epochs: must be 0 or more"),
    (["run", "linear_regression", "--backend", "torch", "--lr", "0"], "--lr: must be a positive number"),
    (["run", "linear_regression", "--backend", "jax", "--lr", "-0.1"], "--lr: must be a positive number"),
    (["run", "linear_regression", "--backend", "torch", "--model", "sequential"], "no sequential form"),
    (["run", "bce_from_primitives", "--backend", "torch", "--epochs", "3"], "--epochs not applicable"),
    (["run", "linear_regression", "--backend", "jax", "--epochs", "0", "--gif", "x.gif"], "--gif needs at least one epoch"),
    (["compare", "tensor_interop"], "no numbers to compare"),
    (["run", "linear_regression", "--backend", "torch", "--threads", "0"], "--threads: must be from 1 to"),
    (["run", "linear_regression", "--backend", "jax", "--threads", "-2"], "--threads: must be from 1 to"),
    (["compare", "linear_regression", "--threads", "100000"], "--threads: must be from 1 to"),
]


@pytest.mark.parametrize("argv,message", BAD_ARGS, ids=[a[1] + ":" + m.split(":")[0] for a, m in BAD_ARGS])
def test_bad_arguments_fail_in_one_line(argv, message, tmp_path, capsys):
    outputs = ["--history", tmp_path / "h.json"]
    outputs += ["--save", tmp_path / "p.npz"] if "bce" not in argv[1] and argv[0] == "run" else []
    code, _, err = run_cli(capsys, *argv, *(outputs if argv[0] == "run" else []))
    assert_usage_error(code, err, message)
    assert list(tmp_path.iterdir()) == []


def write_init(path, params):
    weights.save(path, params)
    return path


@pytest.fixture
def network_init():
    return {k: v.astype(np.float32) for k, v in registry.shared_init("neural_network").items()}


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
@pytest.mark.parametrize("case", ["missing", "extra", "misshaped"])
def test_init_file_that_does_not_fit_names_each_parameter(case, suffix, network_init, tmp_path, capsys):
    params = dict(network_init)
    if case == "missing":
        del params["hidden_2.bias"], params["output.weight"]
        expected = ["missing hidden_2.bias, output.weight"]
    elif case == "extra":
        params["hidden_3.weight"] = np.zeros((3, 3), np.float32)
        expected = ["unexpected hidden_3.weight"]
    else:
        params["hidden_1.weight"] = params["hidden_1.weight"].T.copy()      # (1, 200): a missing transpose
        expected = ["hidden_1.weight has shape (1, 200), expected (200, 1)"]
    init = write_init(tmp_path / f"init{suffix}", params)
    for backend in ("torch", "jax"):
        code, _, err = run_cli(capsys, "run", "neural_network", "--backend", backend, "--init", init,
                               "--save", tmp_path / "out.npz", "--quiet")
        assert_usage_error(code, err, *expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == [init.name]


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_truncated_or_foreign_weights_file(suffix, network_init, tmp_path, capsys):
    good = write_init(tmp_path / f"good{suffix}", network_init)
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    foreign = tmp_path / f"foreign{suffix}"
    foreign.write_text("Id,SepalLengthCm\n1,5.1\n")
    for bad in (truncated, foreign):
        code, _, err = run_cli(capsys, "run", "neural_network", "--backend", "jax", "--init", bad,
                               "--history", tmp_path / "h.json", "--quiet")
        assert_usage_error(code, err, str(bad))
    code, _, err = run_cli(capsys, "run", "neural_network", "--backend", "torch", "--init", tmp_path / "init.pt")
    assert_usage_error(code, err, "unknown weights format")
    assert not (tmp_path / "h.json").exists()


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_gpu_where_there_is_none(backend, tmp_path, capsys):
    import jax
    import torch
    if torch.cuda.is_available() or any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("this machine has a GPU: the no-GPU error cannot happen here")
    code, _, err = run_cli(capsys, "run", "linear_regression", "--backend", backend, "--device", "gpu",
                           "--save", tmp_path / "p.npz")
    assert_usage_error(code, err, "--device gpu", "GPU")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
@pytest.mark.parametrize("backend,dtype,model", [("torch", "float32", "class"), ("jax", "float32", "class"),
                                                 ("torch", "float64", "sequential"), ("jax", "float64", "sequential")])
def test_init_then_save_round_trips_exactly(backend, dtype, model, suffix, tmp_path, capsys):
    params = {k: v.astype(dtype) for k, v in registry.shared_init("neural_network").items()}
    init = write_init(tmp_path / f"init{suffix}", params)
    code, _, _ = run_cli(capsys, "run", "neural_network", "--backend", backend, "--dtype", dtype, "--model", model,
                         "--epochs", 0, "--init", init, "--save", tmp_path / f"out{suffix}", "--quiet")
    assert code == 0
    saved = weights.load(tmp_path / f"out{suffix}")
    assert saved.keys() == params.keys()
    for name in params:
        assert saved[name].dtype == params[name].dtype
        assert np.array_equal(saved[name], params[name]), name


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_run_writes_history_plot_and_gif(backend, tmp_path, capsys):
    out = {k: tmp_path / f"lin.{k}" for k in ("json", "png", "gif", "npz")}
    code, stdout, _ = run_cli(capsys, "run", "logistic_regression", "--backend", backend, "--epochs", 4,
                              "--batch-size", 30, "--shuffle", "--seed", 5, "--history", out["json"],
                              "--plot", out["png"], "--gif", out["gif"], "--save", out["npz"])
    assert code == 0 and "accuracy" in stdout
    history = json.loads(out["json"].read_text())
    assert {"example", "backend", "dtype", "device", "seed", "epochs", "batch_size", "shuffle", "lr",
            "step_losses", "epoch_losses", "params", "metrics", "train_seconds"} <= history.keys()
    assert history["backend"] == backend and history["seed"] == 5 and history["shuffle"] is True
    assert len(history["step_losses"]) == 4 * 4 and len(history["epoch_losses"]) == 4   # 100 = 3·30 + 10
    assert np.array_equal(np.asarray(history["params"]["linear.weight"], np.float32),
                          weights.load(out["npz"])["linear.weight"])
    assert 0 <= history["metrics"]["accuracy"] <= 1
    assert out["png"].stat().st_size > 0 and out["gif"].stat().st_size > 0


@pytest.mark.parametrize("backend", ["torch", "jax"])
@pytest.mark.parametrize("example", ["bce_from_primitives", "tensor_interop"])
def test_demos_run_and_record(backend, example, tmp_path, capsys):
    code, stdout, _ = run_cli(capsys, "run", example, "--backend", backend, "--history", tmp_path / "h.json")
    assert code == 0
    values = json.loads((tmp_path / "h.json").read_text())["values"]
    if example == "bce_from_primitives":
        assert "1.883484" in stdout and values["library"] == pytest.approx(1.883484, abs=1e-6)
    else:
        assert values["value"] == [list(r) for r in specs.INTEROP_LIST]
        assert "shares memory" in stdout and "copies" in stdout


def test_errors_have_no_traceback_as_a_real_process(tmp_path):
    """The same as above, through `python -m examples`: stderr is exactly one line."""
    proc = subprocess.run([sys.executable, "-m", "examples", "run", "neural_network", "--backend", "torch",
                           "--init", str(tmp_path / "missing.npz"), "--save", str(tmp_path / "p.npz")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "no such file" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_threads_holds_for_the_run_and_the_callers_count_comes_back(monkeypatch, tmp_path, capsys):
    import torch
    from torchref import training
    fit, seen = training.fit, []
    monkeypatch.setattr(training, "fit", lambda *a, **k: (seen.append(torch.get_num_threads()), fit(*a, **k))[1])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        code, _, _ = run_cli(capsys, "run", "linear_regression", "--backend", "torch", "--epochs", "2", "--quiet")
        assert code == 0 and seen == [1] and torch.get_num_threads() == 2     # torch's default, 1
        code, _, _ = run_cli(capsys, "run", "linear_regression", "--backend", "torch", "--epochs", "2", "--quiet",
                             "--threads", "1")
        assert code == 0 and seen == [1, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_one_thread_reaches_xla_before_jax_starts_and_a_users_flag_wins(monkeypatch):
    from examples.cli import request_threads
    monkeypatch.delitem(sys.modules, "jax")                 # as in a fresh `python -m examples`
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=x")
    request_threads(2), request_threads(None)
    assert os.environ["XLA_FLAGS"] == "--xla_dump_to=x"     # more than one, or the default: XLA's own pool
    request_threads(1)
    assert os.environ["XLA_FLAGS"] == "--xla_dump_to=x --xla_cpu_multi_thread_eigen=false"
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
    request_threads(1)
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_multi_thread_eigen=true"
