"""The port harness (parity_tests/harness.py) on correct ports: the example MLP with
LayerNorm and GELU, and an LSTM classifier (nn.LSTM against nnx.RNN of an LSTM cell),
both in float64 and float32; a CNN and residual blocks the harness has never seen in
the examples; and the caller's models left as they were."""
import numpy as np
import pytest
import torch
from flax import nnx

from examples.own_port import NnxMLP, TorchMLP, make_data
from parity_tests.tests import harness_models as hm
from parity_tests.harness import PortInputError, check_port



@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mlp_with_layernorm_port_passes(dtype):
    x, y = make_data()
    torch_model, nnx_model = TorchMLP(), NnxMLP()
    before_torch = {k: v.clone() for k, v in torch_model.state_dict().items()}
    before_nnx = nnx.to_pure_dict(nnx.state(nnx_model))
    report = check_port(torch_model, nnx_model, x, y, loss="mse", optimizer="adam", lr=1e-2, steps=20,
                        batch_size=32, dtype=dtype)
    hm.assert_passed(report)
    by_quantity = {(r.rung, r.quantity): r for r in report.rows}
    if dtype == "float64":                    # the table's 1e-10: measured ~1e-16 absolute
        assert by_quantity[(2, "loss")].max_abs < 1e-14
        assert by_quantity[(3, "gradients")].max_abs < 1e-14
    # the caller's models are untouched: torch's weights and dtype, NNX's own init
    after = torch_model.state_dict()
    assert all(torch.equal(before_torch[k], after[k]) for k in before_torch)
    assert next(torch_model.parameters()).dtype == torch.float32
    after_nnx = nnx.to_pure_dict(nnx.state(nnx_model))
    assert np.array_equal(before_nnx["norm"]["scale"], after_nnx["norm"]["scale"])
    assert np.array_equal(before_nnx["inp"]["kernel"], after_nnx["inp"]["kernel"])
    assert not np.allclose(after_nnx["inp"]["kernel"], torch_model.inp.weight.detach().numpy().T)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_lstm_classifier_port_passes(dtype):
    x, y = hm.lstm_data(32)                   # one batch shape: one compiled step (a scan)
    report = check_port(hm.TorchLSTMClassifier(), hm.NnxLSTMClassifier(), x, y, loss="cross_entropy",
                        optimizer="adam", steps=12, batch_size=32, dtype=dtype)
    hm.assert_passed(report)
    assert any(r.quantity == "fitted model: accuracy" or "accuracy" in r.quantity for r in report.rows)


def test_gru_port_passes_and_a_stock_gru_cell_is_refused():
    """nn.GRU against nnx.RNN of a GRU cell whose hidden Linear has a bias (torch's b_hn
    sits inside the reset gate's product); a stock nnx.GRUCell has no slot for it."""
    x, y = hm.lstm_data(32)
    kw = dict(loss="cross_entropy", optimizer="adam", steps=6, batch_size=32)
    hm.assert_passed(check_port(hm.TorchGRUClassifier(), hm.NnxRecurrentClassifier(cell=hm.BiasedGRUCell), x, y, **kw))
    # the refusal names the layer: a model may hold several GRUs (a seq2seq's encoder and decoder)
    with pytest.raises(PortInputError, match="torch layer 'rnn': nnx.GRUCell has no slot for torch's b_hn"):
        check_port(hm.TorchGRUClassifier(), hm.NnxRecurrentClassifier(cell=nnx.GRUCell), x, y, **kw)


def test_cnn_port_with_nhwc_input_passes():
    x, y = hm.cnn_data()
    report = check_port(hm.TorchCNN(), hm.NnxCNN(), x, y, loss="cross_entropy", optimizer="sgd", lr=0.05,
                        steps=12, batch_size=8, dtype="float32", input_layout="nhwc")
    hm.assert_passed(report)


def test_flatten_after_conv_needs_the_linears_input_order():
    """torch flattens (C, H, W), an NHWC port (H, W, C): the Linear after the flatten takes
    the converter's input_chw permutation (a LayerKind given as the layer's conversion).
    Without it the port fails, and the locator names the Linear (its input, the flatten's
    output, agrees once compared in NHWC order)."""
    from portcore.kinds import Linear
    x, y = hm.cnn_data()
    kw = dict(loss="cross_entropy", optimizer="sgd", lr=0.05, steps=4, batch_size=24, input_layout="nhwc")
    fc = {"fc": Linear(27, hm.CLASSES, input_chw=(3, 3, 3))}
    hm.assert_passed(check_port(hm.TorchPoolFlattenCNN(), hm.NnxPoolFlattenCNN(), x, y, convert=fc, **kw))
    report = check_port(hm.TorchPoolFlattenCNN(), hm.NnxPoolFlattenCNN(), x, y, **kw)
    assert not report.passed and report.located["layer"] == "fc" and report.located["quantity"] == "output"


@pytest.mark.parametrize("loss", ["bce_with_logits", "bce"])
def test_embedding_port_with_binary_losses(loss):
    """Integer inputs through nn.Embedding / nnx.Embed; bce takes probabilities (torch's
    -100 clamp of each log written on the JAX side)."""
    class Probabilities(hm.TorchBagOfEmbeddings):
        def forward(self, tokens):
            return torch.sigmoid(super().forward(tokens))

    class NnxProbabilities(hm.NnxBagOfEmbeddings):
        def __call__(self, tokens):
            return nnx.sigmoid(super().__call__(tokens))
    torch_model, nnx_model = (hm.TorchBagOfEmbeddings(), hm.NnxBagOfEmbeddings()) if loss == "bce_with_logits" \
        else (Probabilities(), NnxProbabilities())
    x, y = hm.token_data()
    report = check_port(torch_model, nnx_model, x, y, loss=loss, optimizer="adam", lr=0.05, steps=8, batch_size=32)
    hm.assert_passed(report)
    assert any("accuracy" in r.quantity for r in report.rows if r.rung == 7)


def test_residual_blocks_port_passes_with_adamw():
    x, y = hm.blocks_data()
    report = check_port(hm.TorchBlocks(), hm.NnxBlocks(), x, y, optimizer="adamw", steps=12, dtype="float64")
    hm.assert_passed(report)
    assert "AdamW lr 0.01 weight decay 0.01" in report.markdown()


def test_a_stock_lstm_cell_computes_the_same_but_trains_differently():
    """A stock nnx.LSTMCell holds torch's two biases as one sum: the loss and every
    gradient agree, but torch updates both biases, so the sum moves twice as far."""
    x, y = hm.lstm_data(32)
    report = check_port(hm.TorchLSTMClassifier(), hm.NnxLSTMClassifier(cell=nnx.LSTMCell), x, y,
                        loss="cross_entropy", optimizer="sgd", lr=0.1, steps=4, batch_size=32, locate=False)
    assert not report.passed
    f = report.first_failure
    assert (f["rung"], f["quantity"], f["layer"]) == (4, "parameters after the update", "rnn")
    assert f["entry"].startswith("rnn.cell.h") and f["entry"].endswith(".bias")
    assert {r.rung for r in report.rows if r.passed} >= {2, 3}


def test_batchnorm_steps_agree_but_flax_keeps_the_biased_running_variance():
    """Loss and gradients agree (training mode uses the batch's statistics); the running
    variance does not, from the first step on: torch updates it with the unbiased batch
    variance, nnx.BatchNorm with the biased one (batch 32: 1/31 apart, x momentum 0.1),
    and rungs 4-5 compare the state a step updates with the parameters."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4))
    report = check_port(hm.TorchBatchNormMLP(), hm.NnxBatchNormMLP(), x, np.sin(x[:, :1]), steps=8,
                        keep_going=True, locate=False)
    f = report.first_failure
    assert (f["rung"], f["step"], f["quantity"], f["layer"], f["entry"]) == (
        4, 0, "parameters and state after the update", "bn", "bn.var")
    assert 1e-4 < f["max_rel"] < 0.1 / 31
    rows = {(r.rung, r.quantity): r for r in report.rows}
    assert all(r.passed for r in report.rows if r.rung in (2, 3))
    assert rows[(4, "gradients")].passed and rows[(5, "gradients")].passed
    assert not rows[(6, "fitted running statistics: bn.var")].passed
    assert not rows[(7, "fitted model: final loss")].passed     # eval mode uses the running stats


@pytest.mark.parametrize("form", ["class", "sequential"])
def test_the_tutorials_own_network_passes(form):
    """The ladder's own twins through the harness: torchref's and jaxport's network on
    the tutorial's data. torch's Sequential names its layers "0", "2", "4", NNX's
    ("layers", 0), ...: a name_map."""
    import jaxport.neural_network as jn
    import torchref.neural_network as tn
    from portcore import registry
    x, y = registry.make_data("neural_network", 0)
    names = None if form == "class" else {str(i): f"layers.{i}" for i in (0, 2, 4)}
    report = check_port(tn.build_model(form), jn.build_model(form), x, y, loss="mse", optimizer="adam", lr=0.01,
                        steps=10, batch_size=100, name_map=names)
    hm.assert_passed(report)


def test_name_map_connects_renamed_layers():
    class Renamed(nnx.Module):
        def __init__(self):
            inner = NnxMLP()
            self.first, self.norm, self.last = inner.inp, inner.norm, inner.out

        def __call__(self, x):
            return self.last(nnx.gelu(self.norm(self.first(x)), approximate=False))
    x, y = make_data()
    report = check_port(TorchMLP(), Renamed(), x, y, steps=4, rungs=(2, 3, 4),
                        name_map={"inp": "first", "out": "last"})
    assert report.passed, report.markdown()
    # without it, one error lists what is left on both sides
    with pytest.raises(PortInputError, match=r"torch layers with no NNX counterpart: inp, out \| NNX arrays no torch "
                                             r"layer reaches: first.bias, first.kernel, last.bias, last.kernel"):
        check_port(TorchMLP(), Renamed(), x, y, steps=4, rungs=(2,))


def test_an_explicit_optimizer_pair_runs_as_given():
    """(torch factory, optax transformation): plain SGD agrees; optax.adamw's default
    weight decay (1e-4) against torch's AdamW's (1e-2) is caught at the first step."""
    import optax
    x, y = make_data(64)
    sgd = (lambda ps: torch.optim.SGD(ps, lr=0.05), optax.sgd(0.05))
    report = check_port(TorchMLP(), NnxMLP(), x, y, optimizer=sgd, steps=6, batch_size=64)
    hm.assert_passed(report)
    adamw = (lambda ps: torch.optim.AdamW(ps, lr=1e-2), optax.adamw(1e-2))
    report = check_port(TorchMLP(), NnxMLP(), x, y, optimizer=adamw, steps=6, batch_size=64, locate=False)
    f = report.first_failure
    assert (f["rung"], f["quantity"]) == (4, "parameters after the update"), report.markdown()
    # the decay's difference, lr x (1e-2 - 1e-4) x |w|, is ~1e-4 x |w|: far above float64's 1e-10
    assert 1e-6 < f["max_abs"] < 1e-3


@pytest.mark.parametrize("kwargs, message", [
    (dict(loss="hinge"), "unknown loss"),
    (dict(optimizer="lamb"), "unknown optimizer"),
    (dict(dtype="float16"), "unknown dtype"),
    (dict(y=np.zeros((95, 1))), "same number of rows"),
    (dict(y=np.zeros((96, 2))), "output per row"),
    (dict(device="gpu"), "cpu only"),
    (dict(loss="cross_entropy", y=np.arange(96) % 3), r"class labels in y run 0\.\.2, the model has 1 classes"),
    (dict(loss="cross_entropy", y=np.zeros((96, 2), int)), r"cross_entropy needs \(N, classes\) outputs"),
])
def test_bad_input_is_a_port_input_error(kwargs, message):
    x, y = make_data()
    y = kwargs.pop("y", y)
    with pytest.raises(PortInputError, match=message):
        check_port(TorchMLP(), NnxMLP(), x, y, steps=2, **kwargs)
