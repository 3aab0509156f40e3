"""Public models through the port harness (issue 21, "a zoo of public models"): the
PyTorch examples' MNIST network (parity_tests/zoo_mnist.py) and a nanoGPT-style GPT
(parity_tests/zoo_gpt.py). Correct ports pass where they do pass (docs/check-your-own-port.md,
"Public models", has the float32 false verdicts); planted porting bugs fail at a named
rung and the locator names the layer."""
import torch

from parity_tests import zoo_gpt as zg
from parity_tests import zoo_mnist as zm
from parity_tests.engine import port_optax as po
from parity_tests.harness import PortInputError, check_port

ALL_RUNGS = {2, 3, 4, 5, 6, 7}


def _assert_passed(report):
    assert report.passed, report.markdown()
    assert report.first_failure is None and report.located is None
    assert {r.rung for r in report.rows} == ALL_RUNGS
    assert all(r.passed and r.used <= 1.0 for r in report.rows)


def _where(report):
    f = report.first_failure
    print(f"ZOO {report.settings['model']} {report.settings['dtype']}: rung {f['rung']} step {f['step']} "
          f"{f['quantity']} layer {f['layer']} max_abs {f['max_abs']:.3g} max_rel {f['max_rel']:.3g} "
          f"located {report.located and {k: report.located.get(k) for k in ('layer', 'quantity', 'max_abs', 'note')}}")
    return f["rung"], f["step"], f["quantity"], f["layer"]


# ---- the MNIST network ------------------------------------------------------------------
def _mnist(nnx_model, dtype="float64", rungs=(2, 3, 4, 5, 6, 7), n=16, **kw):
    x, y = zm.mnist_like_data(n)
    kw = {**zm.TRAIN, "convert": zm.FC1_CONVERT, **kw}
    return check_port(zm.torch_net(), nnx_model, x, y, steps=3, batch_size=8, dtype=dtype, rungs=rungs, **kw)


def test_mnist_net_port_passes_in_float64():
    _assert_passed(_mnist(zm.NnxNet()))


def test_mnist_planted_bugs_fail_and_are_located():
    # log_softmax over the batch (axis 0): the difference arises after fc2, the last module
    report = _mnist(zm.NnxNet(log_softmax_axis=0), rungs=(2,))
    assert _where(report)[:2] == (2, None) and report.first_failure["layer"] == "fc2", report.markdown()
    # fc1 given torch's (C, H, W) column order for NHWC's (H, W, C) flatten
    report = _mnist(zm.NnxNet(), rungs=(2,), convert={})
    assert _where(report)[0] == 2 and report.first_failure["layer"] == "fc1", report.markdown()


def test_mnist_adadelta_rho_off_fails_at_the_first_step():
    def torch_side(ps):
        opt = torch.optim.Adadelta(ps, lr=1.0)
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)

    lrs = po.step_lr_table(1.0, 3, 1, 0.7)
    report = _mnist(zm.NnxNet(), rungs=(2, 3, 4), optimizer=(torch_side, po.torch_adadelta(lrs, rho=0.95)),
                    lr=None, schedule=None)
    assert _where(report)[:3] == (4, 0, "parameters after the update"), report.markdown()
    assert report.first_failure["max_rel"] > 1e-3


# ---- the GPT ------------------------------------------------------------------------------
def _gpt(nnx_model, dtype="float64", rungs=(2, 3, 4, 5, 6, 7), c=zg.GPTConfig(), tie=False, **kw):
    x, y = zg.token_data(8, c)
    return check_port(zg.GPT(c, tie=tie), nnx_model, x, y, steps=4, batch_size=4, dtype=dtype, rungs=rungs,
                      convert=zg.ln_kinds(c), **{**zg.TRAIN, **kw})


def test_gpt_port_passes_in_float64():
    _assert_passed(_gpt(zg.NnxGPT()))


def test_gpt_without_biases_passes_in_float32():
    """nanoGPT's default bias=False. With biases, float32 fails rung 4 on c_attn.bias
    (the key bias, whose gradient is rounding noise that Adam normalises): see the docs.
    The margin is thin: rung 6's fitted transformer.h.1.ln_2.scale used 0.99 of its bound."""
    c = zg.GPTConfig(bias=False)
    _assert_passed(_gpt(zg.NnxGPT(c), "float32", c=c))


def test_gpt_tied_weights():
    """Tying (wte.weight = lm_head.weight) ports as wte.attend on the NNX side: torch's
    lm_head holds no parameter of its own; a tied torch model against an untied NNX one
    is bad input."""
    report = _gpt(zg.NnxGPT(tie=True), tie=True, rungs=(2, 3, 4, 5))
    assert report.passed, report.markdown()
    try:
        _gpt(zg.NnxGPT(tie=False), tie=True, rungs=(2,))
    except PortInputError as error:
        assert "lm_head.kernel gets no torch array" in str(error)
    else:
        raise AssertionError("an untied NNX lm_head took no torch weights and was not refused")


def test_gpt_planted_bugs_fail_at_rung_2_and_are_located():
    planted = {   # keyword of NnxGPT: the layer the locator names
        "ln_eps": (1e-6, "transformer.h.0.ln_1"),
        # the attention itself is a function between c_attn and c_proj: c_proj is named
        "mask_offset": (1, "transformer.h.0.attn.c_proj"),
        "scale_by": ("embd", "transformer.h.0.attn.c_proj"),
        "gelu_tanh": (True, "transformer.h.0.mlp.c_proj"),
    }
    for key, (value, layer) in planted.items():
        report = _gpt(zg.NnxGPT(**{key: value}), rungs=(2,))
        assert _where(report)[0] == 2 and report.first_failure["layer"] == layer, (key, report.markdown())
