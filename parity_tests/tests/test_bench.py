"""`python -m examples bench`: a smoke run that checks the report's shape and one-line
errors. Speed is measured by the command, never asserted here."""
import json
import os

import pytest

from examples import bench_common, bench_timing
from portcore import registry, specs
from examples.cli import main


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_bench_writes_a_complete_report(tmp_path, capsys, monkeypatch):
    # The smoke run needs the floor's arithmetic, not a precise peak: a small matmul.
    monkeypatch.setattr(bench_timing, "PEAK_N", 256)
    path = tmp_path / "bench.json"
    code, out, _ = run_cli(capsys, "bench", "linear_regression", "--repeats", 1, "--sizes", "tutorial",
                           "--no-compile", "--json", path)
    assert code == 0 and "linear_regression" in out and "eager/jax" in out
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]      # no temporary left
    report = json.loads(path.read_text())
    assert {"results", "device", "versions"} <= set(report) and report["device"]
    assert set(report["versions"]) == {"torch", "jax", "jaxlib", "flax", "optax", "numpy"}
    [row] = report["results"]
    assert (row["example"], row["size"], row["steps"]) == ("linear_regression", "tutorial", 100)
    assert row["torch_compile_s"] is None                              # --no-compile
    for key in ("torch_eager_s", "jax_s", "jax_compile_s", "floor_s"):
        assert isinstance(row[key], float) and row[key] > 0, (key, row[key])
    if not hasattr(os, "sched_setaffinity"):          # no pinned child, no one-core peak
        assert row["floor_1core_s"] is None and report["peak_1core_gflops"] is None
        return
    # both floors are the run's FLOPs over a peak measured in the same run; how the two
    # peaks compare depends on the load (another process on the cores made the machine's
    # 40 GFLOP/s beside one pinned core's 104), so only the arithmetic is asserted
    assert report["peak_1core_gflops"] > 0 and isinstance(row["floor_1core_s"], float)
    assert row["floor_1core_s"] * report["peak_1core_gflops"] == pytest.approx(
        row["floor_s"] * report["peak_gflops"], rel=1e-12)


def test_a_target_under_one_cores_matmul_time_is_called_beyond_one_core():
    from examples.bench import beyond_one_core
    row = dict(torch_eager_s=0.8, floor_1core_s=0.12)
    assert beyond_one_core(row, 8.0) == ("; 8x needs jax <= 0.1 s, under the matmuls' 0.12 s at one core's "
                                         "peak: beyond one core")
    assert beyond_one_core(row, 6.0) == ""              # 0.133 s: within one core's reach
    assert beyond_one_core(dict(row, floor_1core_s=None), 8.0) == ""      # no pinned peak (GPU, macOS)


@pytest.mark.parametrize("argv,message", [
    (["no_such_example"], "unknown example 'no_such_example'"),
    (["tensor_interop"], "unknown example 'tensor_interop'"),
    (["--sizes", "huge"], "--sizes"),
    (["--repeats", "0"], "--repeats"),
    (["--torch-threads", "-1"], "--torch-threads"),
])
def test_bad_arguments_fail_in_one_line(argv, message, tmp_path, capsys):
    code, _, err = run_cli(capsys, "bench", *argv, "--json", tmp_path / "b.json")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err and list(tmp_path.iterdir()) == []


def test_large_workload_is_the_tutorial_data_tiled():
    x, y, order, config = bench_common.workload("logistic_regression", "large")
    assert x.shape == (bench_common.LARGE_N, 2) and y.shape == (bench_common.LARGE_N, 1)
    assert order.shape == (bench_common.LARGE_EPOCHS, bench_common.LARGE_N) and config.batch_size == bench_common.LARGE_BATCH
    x, y, order, config = bench_common.workload("lstm", "large")           # a deep example: batches 8x
    assert x.shape == (bench_common.LARGE_N, 8, 8) and y.shape == (bench_common.LARGE_N,)
    assert config.batch_size == 8 * registry.get("lstm").defaults.batch_size
    assert order.shape == (bench_common.DEEP_LARGE_EPOCHS, bench_common.LARGE_N)
    assert bench_common.matmul_flops("neural_network", 100) == 3 * 2 * 100 * (200 + 200 * 100 + 100)


def test_gpu_without_one_fails_in_one_line(capsys):
    import jax
    import torch
    if torch.cuda.is_available() or any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("this machine has a GPU")
    code, _, err = run_cli(capsys, "bench", "linear_regression", "--device", "gpu")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "GPU" in err, err


@pytest.mark.parametrize("example", ["linear_regression", "cnn"])
def test_torch_compile_loop_trains_the_run_as_torchref_fit_does(example, monkeypatch):
    """bench's torch.compile loop with torch.compile itself made the identity (compiling
    takes minutes on a CPU): the loop around it must train like torchref.fit, class
    indices as labels included, and report times rather than None."""
    import torch
    from torchref import training
    monkeypatch.setattr(torch, "compile", lambda f: f)
    x, y, order, config = bench_common.workload(example, "tutorial")
    losses = []
    real_loss = training.example_module(example).loss_fn
    monkeypatch.setattr(training.example_module(example), "loss_fn",
                        lambda out, target: (losses.append(1), real_loss(out, target))[1])
    seconds, compile_seconds = bench_timing.time_torch_compile(
        example, registry.shared_init(example), x, y, order[:3], config, "float32", "cpu", 1)
    steps = 3 * specs.steps_per_epoch(len(x), config.batch_size)     # 3 epochs
    assert seconds > 0 and compile_seconds > 0 and len(losses) == 3 + steps   # after 3 compiling steps


# ---- --write-tables: the README's and docs/speed.md's tables, from a quiet machine only ----
from examples import bench_tables  # noqa: E402


def _report(load_during=(0.3, 0.4)):
    row = dict(example="cnn", size="tutorial", steps=460, batch_size=64, torch_eager_s=2.0, torch_compile_s=1.0,
               torch_compile_compile_s=12.0, jax_s=0.5, jax_compile_s=3.0, floor_s=0.1, floor_1core_s=0.2,
               load=list(load_during))
    return {"results": [row], "device": "a CPU, 2 cores", "dtype": "float32", "repeats": 3, "torch_threads": 1,
            "peak_gflops": 200.0, "peak_1core_gflops": 100.0, "load_average": [0.2, 0.3],
            "versions": {"torch": "2.13.0", "jax": "0.10.2", "flax": "0.12.8", "optax": "0.2.8"}}


def _pages(tmp_path):
    readme, speed = tmp_path / "README.md", tmp_path / "speed.md"
    readme.write_text("# x\n<!-- speed-table:begin -->\nold\n<!-- speed-table:end -->\nafter\n")
    speed.write_text("# s\n<!-- bench-tables:begin -->\nold\n<!-- bench-tables:end -->\n")
    return readme, speed


def test_tables_are_written_between_the_markers_from_a_quiet_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_tables, "busy_limit", lambda: 1.5)
    readme, speed = _pages(tmp_path)
    assert bench_tables.write(_report(), force=False, files=(readme, speed)) is None
    text = readme.read_text()
    assert "old" not in text and text.endswith("<!-- speed-table:end -->\nafter\n")
    assert "| `cnn` | tutorial | 2 | 1 | 0.5 | 4.0x | 2.0x | 5.0x | 2.5x |" in text and "load average 0.20-0.40" in text
    assert "matmul peak 200 GFLOP/s (100 on one core)" in text
    full = speed.read_text().splitlines()
    row = next(line for line in full if line.startswith("| `cnn` | tutorial | 460 | 64 |"))
    assert "| 0.1 | 0.2 | 4.0x | 2.0x | 5.0x | 2.5x | 0.30, 0.40 |" in row
    head = full.index(row) - 2            # the header, its separator, the row: one column count
    assert len({line.count("|") for line in full[head:head + 3]}) == 1


def test_a_busy_machine_writes_no_table_unless_forced(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_tables, "busy_limit", lambda: 1.5)
    readme, speed = _pages(tmp_path)
    problem = bench_tables.write(_report(load_during=(0.5, 3.2)), force=False, files=(readme, speed))
    assert "load average reached 3.2" in problem and "--force" in problem
    assert "old" in readme.read_text() and "old" in speed.read_text()          # untouched
    assert bench_tables.write(_report(load_during=(0.5, 3.2)), force=True, files=(readme, speed)) is None
    assert "measured under load 3.2, written with --force" in readme.read_text()


def test_a_page_without_its_markers_is_named(tmp_path):
    readme, speed = _pages(tmp_path)
    speed.write_text("# no markers\n")
    assert bench_tables.write(_report(), force=True, files=(readme, speed)) == \
        f"--write-tables: {speed} has no line <!-- bench-tables:begin -->"


def test_write_tables_on_a_busy_machine_fails_before_measuring(capsys, monkeypatch):
    monkeypatch.setattr(bench_tables, "load", lambda: 9.0)
    code, out, err = run_cli(capsys, "bench", "linear_regression", "--write-tables")
    assert code == 2 and err.count("\n") == 1 and "the load average is 9.0" in err and "--force" in err and not out
