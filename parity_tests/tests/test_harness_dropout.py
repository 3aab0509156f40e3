"""check_port's dropout=True (issue 28): training compared with dropout on, both sides'
dropout swapped for the project's hash-mask dropout (parity_tests/engine/sides/port_dropout.py).
A correct port passes every rung; a port that drops out elsewhere, at another rate or
not at all fails, where with dropout off (the default) it passes."""
import jax
import numpy as np
import pytest
import torch
from flax import nnx
from torch import nn

from parity_tests.harness import PortInputError, check_port
from parity_tests.tests import zoo_mnist as zm
from parity_tests.tests.harness_models import assert_passed


class TorchNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.drop1, self.fc2, self.drop2, self.out = (
            nn.Linear(6, 16), nn.Dropout(0.3), nn.Linear(16, 16), nn.Dropout(0.3), nn.Linear(16, 3))

    def forward(self, x):
        return self.out(self.drop2(torch.relu(self.fc2(self.drop1(torch.relu(self.fc1(x)))))))


class NnxNet(nnx.Module):
    """rate: the planted bug's; without_second: the second dropout left out."""

    def __init__(self, rate=0.3, without_second=False):
        rngs = nnx.Rngs(0)
        self.fc1, self.fc2, self.out = nnx.Linear(6, 16, rngs=rngs), nnx.Linear(16, 16, rngs=rngs), \
            nnx.Linear(16, 3, rngs=rngs)
        self.drop1, self.drop2 = nnx.Dropout(rate, rngs=rngs), nnx.Dropout(rate, rngs=rngs)
        self.without_second = without_second

    def __call__(self, x):
        h = jax.nn.relu(self.fc2(self.drop1(jax.nn.relu(self.fc1(x)))))
        return self.out(h if self.without_second else self.drop2(h))


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6))
    return x, np.tanh(x[:, :3] * 2)


def _check(nnx_model, dtype="float64", dropout=True, rungs=(2, 3, 4, 5, 6, 7)):
    torch.manual_seed(0)
    return check_port(TorchNet(), nnx_model, *_data(), optimizer="adam", lr=1e-2, steps=8, batch_size=8,
                      dtype=dtype, dropout=dropout, rungs=rungs)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_correct_port_passes_with_dropout_on(dtype):
    assert_passed(_check(NnxNet(), dtype))


def test_dropout_left_out_passes_with_dropout_off_and_fails_with_it_on():
    assert_passed(_check(NnxNet(without_second=True), dropout=False))
    report = _check(NnxNet(without_second=True), rungs=(2, 3, 4))
    assert not report.passed and report.first_failure["rung"] == 2, report.markdown()
    # the port never calls drop2: out's input differs, arising between fc2 and out
    assert report.located["layer"] == "out" and "between fc2 and out" in report.located["note"], report.located


def test_another_rate_fails_with_dropout_on():
    report = _check(NnxNet(rate=0.5), rungs=(2, 3, 4))
    assert not report.passed and report.first_failure["rung"] == 2, report.markdown()
    assert report.located["layer"] == "drop1", report.located


@pytest.mark.slow    # ~8 s: the second tier (the MLP with dropout above stays in the first)
def test_the_mnist_network_with_its_dropout_on_nhwc_maps():
    """dropout1 acts on the (N, 12, 12, 64) NHWC map: its units in torch's (C, H, W)
    order, so the same units drop on both sides."""
    x, y = zm.mnist_like_data(16)
    kw = dict(loss="nll_loss", optimizer="sgd", lr=0.01, input_layout="nhwc", convert=zm.FC1_CONVERT, steps=2,
              batch_size=8, dropout=True)
    assert_passed(check_port(zm.torch_net(), zm.NnxNet(), x, y, rungs=(2, 3, 4, 5), **kw), rungs=(2, 3, 4, 5))


def test_other_dropout_classes_are_refused_in_one_line():
    model = TorchNet()
    model.drop1 = nn.Dropout2d(0.3)
    with pytest.raises(PortInputError, match=r"^dropout=True swaps nn.Dropout only; 'drop1' is a Dropout2d"):
        check_port(model, NnxNet(), *_data(), steps=1, batch_size=8, dropout=True)
