"""float32 against float64 (parity_tests/engine/bounds/port_exact.py): a tensor outside the
measured step bound is judged by its error against torch's float64 step from the same
state, at most criterion.ERROR_MULTIPLE x torch float32's own. Here the measured bound
is switched off (its multiples set to 0), so that every float32 comparison of rungs 2-5
goes that way: correct ports of several kinds still pass on it, and the planted bugs
still fail at rung 2, by far more than the multiple allows."""
import numpy as np
import pytest

from examples.own_port import NnxMLP, TorchMLP, make_data
from parity_tests.tests import harness_models as hm
from parity_tests.engine.bounds import step_noise
from parity_tests.harness import check_port

PORTS = {
    "mlp with layernorm and gelu": (TorchMLP, NnxMLP, lambda: make_data(64), {}),
    "lstm classifier": (hm.TorchLSTMClassifier, hm.NnxLSTMClassifier, lambda: hm.lstm_data(32),
                        dict(loss="cross_entropy")),
    "cnn": (hm.TorchCNN, hm.NnxCNN, hm.cnn_data, dict(loss="cross_entropy", input_layout="nhwc")),
}
BUGS = {
    "layernorm eps 1e-6": (TorchMLP, lambda: NnxMLP(eps=1e-6), lambda: make_data(64), {}),
    "tanh gelu": (TorchMLP, lambda: NnxMLP(approximate=True), lambda: make_data(64), {}),
}


@pytest.fixture
def no_measured_bound(monkeypatch):
    monkeypatch.setattr(step_noise, "NOISE_MULTIPLE", 0.0)
    monkeypatch.setattr(step_noise, "RESULT_ULPS", 0.0)


def _run(case):
    torch_model, nnx_model, data, kw = case
    x, y = data()
    return check_port(torch_model(), nnx_model(), x, y, steps=3, batch_size=len(x) // 2, dtype="float32",
                      rungs=(2, 3, 4, 5), **kw)


@pytest.mark.parametrize("port", list(PORTS))
def test_correct_float32_ports_pass_on_their_error_against_float64(port, no_measured_bound):
    report = _run(PORTS[port])
    assert report.passed, report.markdown()
    judged = [r for r in report.rows if "error against torch float64" in r.quantity]
    assert judged, "the float64 judgement was not reached"
    assert max(r.used for r in judged) < 0.5       # under half of ERROR_MULTIPLE: ratios of at most 4


@pytest.mark.parametrize("bug", list(BUGS))
def test_planted_bugs_fail_on_their_error_against_float64(bug, no_measured_bound):
    report = _run(BUGS[bug])
    assert not report.passed and report.first_failure["rung"] == 2
    worst = max(r.used for r in report.rows if "error against torch float64" in r.quantity)
    assert worst > 2, report.markdown()             # > 16 x torch's own error
