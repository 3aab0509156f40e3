"""jaxport.translate on models of several inputs (issue 30): the command's --data holds
`y` and one array per input named as forward's parameters, passed to both sides as
keywords; `translate` traces a dict (keywords) or a tuple (positional) of examples.
Each twin passes every rung of check_port in float64 and float32; every bad input is
exit 2 in one line on stderr, with no traceback and no file written."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from jaxport.translate import cli, translate
from parity_tests.tests import harness_models as hm
from parity_tests.tests.test_translate import check_generated, load_source


def _check(torch_model, generated, x, y, dtype, **kw):
    return check_generated(torch_model, generated, x, y, dtype, **{"batch_size": 8, **kw})


class MaskedMeanClassifier(nn.Module):
    """Two inputs (input_ids, attention_mask), as a text classifier takes them: the mean of
    the kept tokens' embeddings, then a Linear."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(11, 6)
        self.fc = nn.Linear(6, 3)

    def forward(self, input_ids, attention_mask):
        emb = self.embedding(input_ids)
        keep = attention_mask.unsqueeze(-1).to(emb.dtype)
        return self.fc((emb * keep).sum(1) / keep.sum(1))


class TwoFeatureNet(nn.Module):
    """Two feature arrays of other widths, gated: head(relu(fa(a)) * sigmoid(fb(b)))."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fa, self.fb, self.head = nn.Linear(4, 8), nn.Linear(3, 8), nn.Linear(8, 2)

    def forward(self, a, b):
        return self.head(torch.relu(self.fa(a)) * torch.sigmoid(self.fb(b)))


def _token_arrays(n=16, seed=0):
    rng = np.random.default_rng(seed)
    mask = (np.arange(5)[None, :] < rng.integers(2, 6, size=(n, 1))).astype(np.int64)
    ids = rng.integers(1, 11, size=(n, 5)) * mask
    return dict(input_ids=ids, attention_mask=mask, y=(ids.sum(1) % 3).astype(np.int64))


def _feature_arrays(n=16, seed=0):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(n, 4)), rng.normal(size=(n, 3))
    return dict(a=a, b=b, y=np.stack([a.sum(1) * b[:, 0], a[:, 0] - b.sum(1)], 1))


TWO_INPUTS = {
    "token classifier": (MaskedMeanClassifier, _token_arrays, ["--loss", "cross_entropy", "--optimizer", "sgd",
                                                                "--lr", "0.5"]),
    "two feature arrays": (TwoFeatureNet, _feature_arrays, ["--loss", "mse", "--optimizer", "adam", "--lr", "0.05"]),
}


@pytest.mark.slow    # translated and checked in both dtypes; the bad-input cases below stay in the first tier
@pytest.mark.parametrize("name", TWO_INPUTS)
def test_the_command_translates_a_model_of_two_inputs_named_as_forwards_parameters(name, tmp_path, capsys):
    cls, arrays, options = TWO_INPUTS[name]
    data = arrays()
    np.savez(tmp_path / "data.npz", **data)
    out = tmp_path / "port.py"
    assert cli.main([f"{__name__}:{cls.__name__}", "--data", str(tmp_path / "data.npz"), "--out", str(out),
                     "--steps", "3", "--batch-size", "8", *options]) == 0, capsys.readouterr()
    printed = capsys.readouterr().out
    assert "translate float32: agree" in printed and "translate float64: agree" in printed, printed
    inputs = [k for k in data if k != "y"]
    assert f"def __call__(self, {', '.join(inputs)}):" in out.read_text()
    # the same pair through the library, keywords as a dict: every rung, both dtypes, real numbers
    x, y = {k: data[k] for k in inputs}, data["y"]
    generated = load_source(translate(cls(), {k: v[:2] for k, v in x.items()}), tmp_path, "lib")
    kw = dict(zip(options[::2], options[1::2]))
    for dtype in ("float64", "float32"):
        report = _check(cls(), generated, x, y, dtype, loss=kw["--loss"], optimizer=kw["--optimizer"],
                        lr=float(kw["--lr"]))
        hm.assert_passed(report)
        assert report.passed


def test_translate_traces_positional_inputs_too(tmp_path):
    data = _feature_arrays()
    x = (data["a"], data["b"])
    generated = load_source(translate(TwoFeatureNet(), tuple(a[:2] for a in x)), tmp_path)
    assert "def __call__(self, a, b):" in (tmp_path / "port.py").read_text()
    hm.assert_passed(_check(TwoFeatureNet(), generated, x, data["y"], "float64", loss="mse", lr=0.05))


def _bad(**change):
    data = _token_arrays()
    for k, v in change.items():
        if v is None:
            data.pop(k)
        else:
            data[k] = v
    return data


@pytest.mark.parametrize("arrays, message", [
    (_bad(attention_mask=None), "no array for attention_mask, which forward(input_ids, attention_mask) needs"),
    (_bad(y=None), "no array named y"),
    (_bad(attention_mask=_token_arrays()["attention_mask"][:7]), "input attention_mask has 7 rows and y has 16"),
    (_bad(y=_token_arrays()["y"][:9]), "input input_ids has 16 rows and y has 9"),
    (_bad(mask=_token_arrays()["attention_mask"], attention_mask=None),
     "array mask is not a parameter of forward(input_ids, attention_mask)"),
    ({"x": _token_arrays()["input_ids"], "y": _token_arrays()["y"]}, "takes 2 inputs and the file has x only"),
    (_bad(input_ids=_token_arrays()["input_ids"] * 1.5), "the torch model raised RuntimeError on the example inputs"),
])
def test_bad_inputs_of_a_two_input_model_are_exit_2_in_one_line_without_a_file(arrays, message, tmp_path, capsys):
    np.savez(tmp_path / "data.npz", **arrays)
    out = tmp_path / "port.py"
    assert cli.main([f"{__name__}:MaskedMeanClassifier", "--data", str(tmp_path / "data.npz"),
                     "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "data.npz"]


def test_a_missing_input_through_the_command_has_no_traceback(tmp_path):
    np.savez(tmp_path / "data.npz", **_bad(attention_mask=None))
    out = tmp_path / "port.py"
    run = subprocess.run([sys.executable, "-m", "jaxport.translate", f"{__name__}:MaskedMeanClassifier",
                          "--data", str(tmp_path / "data.npz"), "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'data.npz'}: no array for attention_mask, which forward(input_ids, attention_mask) "
        "needs (has input_ids, y)"], run.stderr
    assert not out.exists()
