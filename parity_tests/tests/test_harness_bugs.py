"""Planted porting bugs: each makes check_port fail, and locate_divergence names the
layer where the difference starts. Correct ports: locate_divergence finds nothing even
at half its tolerance (locate.LOCATE_RTOL, whose docstring lists the measured numbers).

The bugs are the ones docs/design.md lists: LayerNorm's epsilon 1e-6 (Flax's default)
against torch's 1e-5, jax.nn.gelu's default tanh approximation against torch's exact
GELU (a function between modules: the locator says it arises between norm and out), a
conv kernel transposed with .T (the right shape for a square kernel), LSTM gates taken
in the wrong order, and a wrong epsilon deep inside a stack ("blocks.2.norm").
"""
import pytest

from examples.own_port import NnxMLP, TorchMLP, make_data
from parity_tests.tests import harness_models as hm
from parity_tests.harness import check_port, locate_divergence
from parity_tests.engine.locator.locate import LOCATE_RTOL

MLP = dict(torch=TorchMLP, data=lambda: make_data(64), kw={})
LSTM = dict(torch=hm.TorchLSTMClassifier, data=lambda: hm.lstm_data(32), kw=dict(loss="cross_entropy"))
CNN = dict(torch=hm.TorchCNN, data=hm.cnn_data, kw=dict(loss="cross_entropy", input_layout="nhwc"))
BLOCKS = dict(torch=hm.TorchBlocks, data=hm.blocks_data, kw={})

BUGS = {
    "layernorm eps 1e-6": (MLP, lambda: NnxMLP(eps=1e-6), {}, "norm", None),
    "tanh gelu": (MLP, lambda: NnxMLP(approximate=True), {}, "out", "arises between norm and out"),
    "conv kernel .T": (CNN, hm.NnxCNN, dict(convert={"conv": hm.conv_kernel_transposed_with_T}), "conv", None),
    "lstm gates i,f,o,g": (LSTM, hm.NnxLSTMClassifier, dict(convert={"rnn": hm.lstm_gates_out_of_order}), "rnn", None),
    "eps in blocks.2.norm": (BLOCKS, lambda: hm.NnxBlocks(eps_of_block={2: 1e-6}), {}, "blocks.2.norm", None),
}


@pytest.mark.parametrize("bug", list(BUGS))
def test_planted_bug_fails_and_is_located(bug):
    case, nnx_factory, extra, layer, note = BUGS[bug]
    x, y = case["data"]()
    kw = dict(case["kw"], **extra)
    report = check_port(case["torch"](), nnx_factory(), x, y, steps=4, batch_size=len(x), locate=False, **kw)
    assert not report.passed and report.first_failure["rung"] == 2
    assert report.first_failure["quantity"] in ("loss", "model output (eval mode) on the data")
    where = locate_divergence(case["torch"](), nnx_factory(), x, y, **kw)
    assert where is not None and (where["layer"], where["quantity"]) == (layer, "output")
    assert where["max_over_largest"] > LOCATE_RTOL["float64"]
    assert (note is None) == ("note" not in where)
    if note:
        assert note in where["note"]


@pytest.mark.parametrize("bug", ["layernorm eps 1e-6", "tanh gelu"])
def test_planted_bug_in_float32_is_located_by_check_port_itself(bug):
    """float32 too: the eps bug moves the norm's output by 1.9e-5 of its largest entry,
    4.7x the float32 tolerance; check_port's report names the layer from the locator,
    which looks in float64 first."""
    case, nnx_factory, extra, layer, note = BUGS[bug]
    x, y = case["data"]()
    report = check_port(case["torch"](), nnx_factory(), x, y, steps=4, batch_size=len(x), dtype="float32")
    assert not report.passed
    assert report.first_failure["layer"] == layer and report.located["layer"] == layer
    assert report.located["dtype"] == "float64"            # found there first, clear of float32's rounding
    assert report.located["max_over_largest"] > LOCATE_RTOL["float32"]
    assert f"Located: the output of `{layer}` differs first" in report.markdown()
    # judged by its error against float64: the message gives that error, once, not a
    # "torch 0.0" (the error's expected value) nor the harness's empty config
    message = report.first_failure["message"]
    assert "RMS error against torch float64" in message and message.count(report.first_failure["quantity"]) == 1
    assert "jaxport's " in message and "torch 0.0" not in message and "[config" not in message


CORRECT = {"mlp": (MLP, NnxMLP, {}), "lstm": (LSTM, hm.NnxLSTMClassifier, {}), "cnn": (CNN, hm.NnxCNN, {}),
           "blocks": (BLOCKS, hm.NnxBlocks, {})}


# the first tier keeps the LSTM; the others run in the second (make test's time)
@pytest.mark.parametrize("port", [pytest.param(p, marks=() if p == "lstm" else pytest.mark.slow) for p in CORRECT])
def test_correct_ports_agree_within_half_the_locators_tolerance(port, dtype="float32"):
    """float32, where the margin is thin (float64 ports differ by <= 4.1e-15, locate.py)."""
    case, nnx_factory, extra = CORRECT[port]
    x, y = case["data"]()
    assert locate_divergence(case["torch"](), nnx_factory(), x, y, dtype=dtype, rtol=LOCATE_RTOL[dtype] / 2,
                             **dict(case["kw"], **extra)) is None



@pytest.mark.parametrize("in_float64", [True, False])
def test_a_float32_location_is_sought_in_float64_first(in_float64, monkeypatch):
    """check_port in float32 runs the locator on the pair cast to float64 first; a finding
    only float32 makes carries the note that it may be rounding at a kink (a held-out
    MobileNetV2's momentum bug was blamed on a ReLU6 kink elsewhere). The locator is
    stubbed: what float64 finds (`norm`, or nothing) and what float32 finds (`out`)."""
    from parity_tests.engine.locator import locate as locate_module
    calls = []

    def stub(port, *rest):
        calls.append(port)
        if len(calls) == 1:                       # the first search: the float64 pair's
            return dict(layer="norm", quantity="output") if in_float64 else None
        return dict(layer="out", quantity="gradient")
    monkeypatch.setattr(locate_module, "locate", stub)
    case, nnx_factory, *_ = BUGS["layernorm eps 1e-6"]
    x, y = case["data"]()
    located = check_port(case["torch"](), nnx_factory(), x, y, steps=4, batch_size=len(x), dtype="float32").located
    if in_float64:
        assert len(calls) == 1 and located == dict(layer="norm", quantity="output", dtype="float64")
    else:                                         # then the float32 run's own pair
        assert len(calls) == 2 and calls[0] is not calls[1]
        assert located["layer"] == "out" and "dtype" not in located and "only in float32" in located["note"]
