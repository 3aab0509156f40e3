"""`python -m parity_tests check` as a CI gate: exit 0 when the port agrees, 1 when it
differs (naming the layer), 2 on bad input with one line on stderr and no traceback."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from examples.own_port import make_data
from parity_tests.engine.port_cli import main
from parity_tests.tests.test_harness_pytrees import keyword_data

ROOT = Path(__file__).resolve().parents[2]
MLP = ("examples.own_port:TorchMLP", "examples.own_port:NnxMLP")


def _cli(args, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(tmp_path)]))
    return subprocess.run([sys.executable, "-m", "parity_tests", "check", *args], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "port.npz"
    x, y = make_data(64)
    np.savez(path, x=x, y=y)
    return str(path)


def test_a_correct_port_exits_0(tmp_path, data):
    done = _cli([*MLP, "--data", data, "--steps", "3", "--report", "report.md"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "parity: agree"
    assert "## Parity of MLP / MLP: PASSED" in done.stdout
    assert (tmp_path / "report.md").read_text().strip() == done.stdout.strip()


def test_a_planted_bug_exits_1_and_names_the_layer(tmp_path, data, capsys, monkeypatch):
    """In this process (the real-process path is the test above): a factory module of
    the user's, found on the path."""
    (tmp_path / "buggy_port.py").write_text(
        "from examples.own_port import NnxMLP\n\n\ndef Nnx():\n    return NnxMLP(eps=1e-6)   # Flax's default\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["check", MLP[0], "buggy_port:Nnx", "--data", data, "--steps", "2"]) == 1
    out, err = capsys.readouterr()
    assert err.strip().splitlines()[-1] == "parity: DIFFER at rung 2 (loss at init), loss, layer norm"
    assert "Located: the output of `norm` differs first" in out


def test_bad_input_in_a_real_process_is_one_line_without_traceback(tmp_path, data):
    done = _cli([MLP[0], "examples.own_port:NoSuchFactory", "--data", data], tmp_path)
    assert done.returncode == 2
    assert done.stderr == "error: module 'examples.own_port' has no attribute 'NoSuchFactory'\n"


def _npz(tmp_path, name, **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize("case, message", [
    ("no module", "error: cannot import 'no_such_module'"),
    ("not module:attr", "error: 'examples.own_port': expected module:callable"),
    ("missing file", "error: cannot read"),
    ("no y", "error: {path}: no array named y (has x)"),
    ("rows differ", "error: {path}: input x has 64 rows and y has 10: every array needs the same rows on axis 0"),
    ("wrong output shape", "error: the model's output per row is (1,), y's is (3,) (loss mse)"),
    ("unknown loss", "error: argument --loss: invalid choice: 'hinge'"),
    ("factory raises", "error: the torch factory raised TypeError"),
    ("not a model", "error: the torch model is a tuple, not a torch.nn.Module"),
])
def test_bad_input_exits_2_with_one_line(case, message, tmp_path, data, capsys):
    x, y = make_data(64)
    args = {
        "no module": ["no_such_module:A", MLP[1], "--data", data],
        "not module:attr": ["examples.own_port", MLP[1], "--data", data],
        "missing file": [*MLP, "--data", str(tmp_path / "missing.npz")],
        "no y": [*MLP, "--data", _npz(tmp_path, "no_y.npz", x=x)],
        "rows differ": [*MLP, "--data", _npz(tmp_path, "rows.npz", x=x, y=y[:10])],
        "wrong output shape": [*MLP, "--data", _npz(tmp_path, "shape.npz", x=x, y=np.zeros((64, 3)))],
        "unknown loss": [*MLP, "--data", data, "--loss", "hinge"],
        "factory raises": ["numpy:array", MLP[1], "--data", data],
        "not a model": ["examples.own_port:make_data", MLP[1], "--data", data],
    }[case]
    assert main(["check", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(message.format(path=args[-1]))


# Two inputs named as forward's parameters (the .npz form `python -m jaxport.translate`
# takes too, parity_tests/engine/port_data.py): passed to both sides as keywords.
MASKED_BAG = ("parity_tests.tests.test_harness_pytrees:TorchMaskedBag",
              "parity_tests.tests.test_harness_pytrees:NnxMaskedBag")
MASKED_BAG_RUN = ["--loss", "cross_entropy", "--optimizer", "sgd", "--lr", "0.5", "--steps", "3", "--batch-size", "8"]
LOSS_AT_INIT_BOUND = {"float64": 1e-10, "float32": 1.3e-6}


def _keyword_npz(tmp_path, **change):
    """keyword_data's arrays (input_ids, attention_mask, y) as a .npz, with `change`'s
    arrays replaced, added, or (None) left out."""
    x, y = keyword_data()
    arrays = {**x, "y": y, **change}
    return _npz(tmp_path, "keywords.npz", **{k: v for k, v in arrays.items() if v is not None})


def _rung_rows(markdown: str) -> dict:
    """{(rung, quantity): (max abs, max rel, ok)} of a report's table."""
    rows = [line.strip("|").split("|") for line in markdown.splitlines() if line.startswith("| ") and "---" not in line]
    return {(r[0].strip(), r[1].strip()): (float(r[2]), float(r[3]), r[6].strip()) for r in rows[1:]}


@pytest.mark.parametrize("dtype", ["float64", pytest.param("float32", marks=pytest.mark.slow)])   # make test's margin
def test_a_model_of_two_keyword_inputs_agrees_in_both_dtypes(dtype, tmp_path):
    done = _cli([*MASKED_BAG, "--data", _keyword_npz(tmp_path), *MASKED_BAG_RUN, "--dtype", dtype], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "parity: agree"
    out = done.stdout
    rows = _rung_rows(out)
    assert len(rows) >= 20 and all(ok == "yes" for *_, ok in rows.values()), out
    max_abs, max_rel, _ = rows[("2 loss at init", "loss")]
    assert max_rel <= LOSS_AT_INIT_BOUND[dtype] and max_abs <= LOSS_AT_INIT_BOUND[dtype], out


def test_a_port_that_ignores_the_second_input_exits_1_at_the_layer_after_it(tmp_path, capsys, monkeypatch):
    """The mask reaches the NNX side as a keyword: a port that ignores it differs."""
    (tmp_path / "maskless_port.py").write_text(
        "from parity_tests.tests.test_harness_pytrees import NnxMaskedBag\n\n\n"
        "def Nnx():\n    return NnxMaskedBag(use_mask=False)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["check", MASKED_BAG[0], "maskless_port:Nnx", "--data", _keyword_npz(tmp_path), *MASKED_BAG_RUN]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == "parity: DIFFER at rung 2 (loss at init), loss, layer out"


@pytest.mark.parametrize("change, message", [
    (dict(y=None), "no array named y (has input_ids, attention_mask)"),
    (dict(mask=keyword_data()[0]["attention_mask"], attention_mask=None),
     "array mask is not a parameter of forward(input_ids, attention_mask)"),
    (dict(attention_mask=None), "no array for attention_mask, which forward(input_ids, attention_mask) needs"),
    (dict(x=keyword_data()[0]["input_ids"], input_ids=None, attention_mask=None),
     "forward(input_ids, attention_mask) takes 2 inputs and the file has x only"),
    (dict(attention_mask=keyword_data()[0]["attention_mask"][:7]), "input attention_mask has 7 rows and y has 24"),
])
def test_bad_inputs_of_a_two_input_model_exit_2_with_one_line(change, message, tmp_path, capsys):
    path = _keyword_npz(tmp_path, **change)
    assert main(["check", *MASKED_BAG, "--data", path, "--report", str(tmp_path / "report.md")]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"error: {path}: {message}") and err.count("\n") == 1, err
    assert "Traceback" not in err and out == "" and not (tmp_path / "report.md").exists()
