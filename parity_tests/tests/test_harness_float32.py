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
from parity_tests.engine.bounds import port_exact, step_noise
from parity_tests.engine.bounds.criterion import Bound, fits
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


class _Verdicts:
    """The part of a PortRun that port_exact.check_against_float64 reports to."""
    def __init__(self):
        self.failed = []

    def check(self, actual, expected, *, quantity, tol, **_):
        ok = fits(actual, expected, tol)
        self.failed += [] if ok else [quantity]
        return ok


def _judge(bias_error: float, other_module_scale: float = 0.0) -> list:
    """A gradient step: a Linear's weight (~1e-2) held within the bound, and its bias,
    whose exact gradient is 0 (an attention's key bias), outside it with torch's
    rounding residue 1e-12 and the candidate's `bias_error`; `other_module_scale`: a
    larger tensor elsewhere in the model."""
    rng = np.random.default_rng(0)
    weight = rng.normal(0, 1e-2, (8, 8))
    exact = {"attn.k_proj.weight": weight, "attn.k_proj.bias": np.zeros(8),
             "head.weight": np.full((4, 8), other_module_scale)}
    torch_side = {**exact, "attn.k_proj.bias": np.full(8, 1e-12)}
    candidate = {**exact, "attn.k_proj.bias": np.full(8, bias_error)}
    bound = Bound(0.0, "the measured step bound, held only where equal")
    run = _Verdicts()
    port_exact.check_against_float64(run, 4, [("gradients", candidate, torch_side, bound, exact)], step=0)
    return run.failed


def test_a_zero_gradient_is_judged_at_its_layers_scale_not_its_own():
    """66 x torch's residue (the AVX2 attention case) passes: the floor is 4 ulps of the
    weight's RMS (1e-2), 2.4e-9, and 8 x that is allowed; a bias error of 1e-7, 5 x
    that, fails, and a large tensor in another module does not lift the floor (with 4
    ulps of the bias's own RMS, the old floor, the residue failed)."""
    assert _judge(6.6e-11) == []
    assert _judge(1e-7) == ["gradients: attn.k_proj.bias, RMS error against torch float64 from the same start"]
    assert _judge(1e-7, other_module_scale=1.0) != []


def _judge_with_members(candidate_error: float, member_errors: list) -> list:
    """A gradient outside the step bound: torch's float32 error against float64 1e-9 in
    every entry, the candidate's `candidate_error`, and the step bound's members'
    `member_errors` (float64 steps moved one float32 ulp, float32 steps over other row
    orders)."""
    exact = {"bn.weight": np.linspace(-1e-5, 1e-5, 8)}
    shifted = lambda e: {"bn.weight": exact["bn.weight"] + e}     # noqa: E731
    run = _Verdicts()
    port_exact.check_against_float64(run, 5, [("gradients", shifted(candidate_error), shifted(1e-9),
                                               Bound(0.0, "held only where equal"), exact,
                                               [shifted(e) for e in member_errors])], step=4)
    return run.failed


def test_the_step_bounds_members_are_draws_of_torchs_own_error_too():
    """A held-out MobileNetV2 port (torchvision's, float32, 8 Adam steps): one BatchNorm
    output sat within rounding of ReLU6's kink at 0, and jaxport's compiled step put it
    on the other side from torch float32: its bias gradient 1300 x torch's error against
    float64 (held by the step bound, whose members crossed the kink too), its weight
    gradient 9.1 x (outside the bound, failing the 8 x torch's own). Its members' errors
    count as torch's own: each is as correct a float32 step."""
    assert _judge_with_members(9.1e-9, []) != []                   # torch's one draw: 9.1 x
    assert _judge_with_members(9.1e-9, [2e-9, 5e-9, 3e-9]) == []   # a member 5e-9 away: 1.8 x
    assert _judge_with_members(5e-8, [2e-9, 5e-9, 3e-9]) != []     # 10 x the largest member's
