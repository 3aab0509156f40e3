"""The deep examples from the command line: the weights round trip through files, the
default runs' held-out accuracy, frames that do not change the run, one-line errors."""
import json

import numpy as np
import pytest

from examples.cli import main
from portcore import registry

DEEP = registry.DEEP


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# Every example and dtype at the model level: test_deep_models.py; here the command line,
# for the example with buffers (float32: its compiled functions are the default run's).
@pytest.mark.parametrize("example,dtype", [("cnn", "float32")])
def test_torch_init_through_jaxport_is_bit_identical(example, dtype, tmp_path, capsys):
    """torch's default init saved with --epochs 0, loaded into jaxport with --init and
    saved again: the same file, byte for byte (BatchNorm's running stats and the dropout
    step included)."""
    t, j = tmp_path / "torch.safetensors", tmp_path / "jax.safetensors"
    common = ["--epochs", 0, "--dtype", dtype, "--quiet"]
    assert run_cli(capsys, "run", example, "--backend", "torch", "--save", t, *common)[0] == 0
    assert run_cli(capsys, "run", example, "--backend", "jax", "--init", t, "--save", j, *common)[0] == 0
    assert t.read_bytes() == j.read_bytes()


@pytest.mark.slow    # second tier: whole default runs of both backends
@pytest.mark.parametrize("backend", ["torch", "jax"])
@pytest.mark.parametrize("example", DEEP)
def test_default_run_reaches_95_percent_held_out(example, backend, tmp_path, capsys):
    """The defaults in float32: at least 95% of the 360 held-out digits (measured: 0.969 to
    0.992 over the six runs)."""
    h = tmp_path / "h.json"
    code, out, _ = run_cli(capsys, "run", example, "--backend", backend, "--quiet", "--history", h)
    assert code == 0
    record = json.loads(h.read_text())
    assert record["epochs_run"] == registry.get(example).defaults.epochs
    assert record["metrics"]["accuracy"] >= 0.95, record["metrics"]
    assert set(record["params"]) == set(registry.exchange_shapes(example))


@pytest.mark.slow    # two full runs per backend: the second tier
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_frames_of_held_out_images_leave_the_run_unchanged(backend, tmp_path, capsys):
    """--plot records logits on the training and held-out images, handed to fit
    appended; the batch order never reaches the held-out rows: the same losses and weights."""
    plain, framed = tmp_path / "a.json", tmp_path / "b.json"
    argv = ["run", "gru", "--backend", backend, "--epochs", 2, "--quiet"]
    assert run_cli(capsys, *argv, "--history", plain)[0] == 0
    assert run_cli(capsys, *argv, "--history", framed, "--plot", tmp_path / "p.png")[0] == 0
    a, b = json.loads(plain.read_text()), json.loads(framed.read_text())
    assert a["step_losses"] == b["step_losses"] and a["params"] == b["params"]
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_bad_input_fails_in_one_line(tmp_path, capsys):
    lstm = tmp_path / "lstm.npz"
    assert run_cli(capsys, "init", "lstm", "--rng", 1, "--out", lstm)[0] == 0
    cases = [(["run", "cnn", "--backend", "jax", "--init", lstm], "missing conv1.weight"),
             (["run", "cnn", "--backend", "torch", "--devices", 2], "runs on one device only"),
             (["run", "gru", "--backend", "jax", "--model", "sequential"], "no sequential form"),
             (["compare", "lstm", "--epochs", 0], "at least one epoch")]
    for argv, message in cases:
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, (argv, err)
        assert message in err, (message, err)
