"""Public models through the port harness (issue 21, "a zoo of public models"): the
PyTorch examples' MNIST network (parity_tests/tests/zoo_mnist.py) and a nanoGPT-style GPT
(parity_tests/tests/zoo_gpt.py), ported from their definitions and kept out of the tuning of
the engine's bounds. Correct ports pass in both dtypes (float32 through the judgement
against float64 where the measured step bound is exceeded: docs/check-your-own-port.md,
"Public models"); planted porting bugs fail at a named rung, in both dtypes, and the
locator names the layer."""
import os

import pytest
import torch

from parity_tests.tests import harness_models as hm
from parity_tests.tests import zoo_gpt as zg
from parity_tests.tests import zoo_mnist as zm
import jaxport.optim as po
from parity_tests.harness import PortInputError, check_port

# The second tier (`make test-all`): the zoo's public-model ports and their planted bugs.
pytestmark = pytest.mark.slow



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


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mnist_net_port_passes(dtype):
    """float32 before the judgement against float64: rung 4's Adadelta acc_delta of fc2
    used 1.02 of the measured bound, although the NNX step's error against float64 is
    1.07 x torch's own (every tensor at most 1.08)."""
    hm.assert_passed(_mnist(zm.NnxNet(), dtype))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mnist_planted_bugs_fail_and_are_located(dtype):
    # log_softmax over the batch (axis 0): the difference arises after fc2, the last module
    report = _mnist(zm.NnxNet(log_softmax_axis=0), dtype, rungs=(2,))
    assert _where(report)[:2] == (2, None) and report.first_failure["layer"] == "fc2", report.markdown()
    # fc1 given torch's (C, H, W) column order for NHWC's (H, W, C) flatten
    report = _mnist(zm.NnxNet(), dtype, rungs=(2,), convert={})
    assert _where(report)[0] == 2 and report.first_failure["layer"] == "fc1", report.markdown()


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.01), ("adam", 1e-3)])
def test_mnist_on_more_images_and_larger_batches_passes_in_float32(optimizer, lr):
    """Data the bounds were not tuned on (issue 28): 96 images, 12 steps of 32 (the zoo's
    own case is 16 images, batches of 8). A planted bug still fails there."""
    x, y = zm.mnist_like_data(96)
    kw = dict(input_layout="nhwc", loss="nll_loss", convert=zm.FC1_CONVERT, steps=12, batch_size=32,
              dtype="float32", optimizer=optimizer, lr=lr)
    hm.assert_passed(check_port(zm.torch_net(), zm.NnxNet(), x, y, **kw))
    report = check_port(zm.torch_net(), zm.NnxNet(log_softmax_axis=0), x, y, rungs=(2,), **kw)
    assert _where(report)[:2] == (2, None) and report.first_failure["layer"] == "fc2", report.markdown()


def test_mnist_gradients_do_not_depend_on_max_pool_tie_routing():
    """nnx.max_pool (XLA's reduce_window gradient) against jaxport.nn.max_pool2d (torch's
    routing, a window's gradient to its first maximum) in the port: every whole-data
    gradient bit-identical on the 96 images (tied windows lie on the constant
    background, where the tied positions have the same receptive field)."""
    import jax                                          # noqa: PLC0415
    import jax.numpy as jnp                             # noqa: PLC0415
    from flax import nnx                                # noqa: PLC0415
    from jaxport.nn import max_pool2d                   # noqa: PLC0415
    x, y = zm.mnist_like_data(96)
    x = jnp.asarray(x.transpose(0, 2, 3, 1), jnp.float32)

    def grads(model):
        model.eval()
        return jax.tree.leaves(nnx.state(nnx.grad(lambda m: -jnp.mean(m(x)[jnp.arange(len(y)), y]))(model),
                                         nnx.Param))
    xla = grads(zm.NnxNet())
    original = nnx.max_pool
    nnx.max_pool = lambda a, window, strides=None, padding="VALID": max_pool2d(a, window, strides)
    try:
        torch_routed = grads(zm.NnxNet())
    finally:
        nnx.max_pool = original
    assert len(xla) == 8 and all(float(jnp.max(jnp.abs(a))) > 0 for a in xla)
    for a, b in zip(xla, torch_routed):
        assert jnp.array_equal(a, b)


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


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gpt_port_passes(dtype):
    """float32 before the judgement against float64: rung 4 failed on c_attn.bias (the
    key third's gradient is pure rounding, 1.6e-20 in float64, which Adam divides by its
    own size: 5.8 x the measured bound), while its error against float64 is 0.83 x
    torch's own."""
    hm.assert_passed(_gpt(zg.NnxGPT(), dtype))


def test_gpt_without_biases_passes_in_float32():
    """nanoGPT's default bias=False (its LayerNorm without a bias: a convert hook)."""
    c = zg.GPTConfig(bias=False)
    hm.assert_passed(_gpt(zg.NnxGPT(c), "float32", c=c))


def test_gpt_tied_weights():
    """Tying (wte.weight = lm_head.weight) ports as wte.attend on the NNX side: torch's
    lm_head holds no parameter of its own; a tied torch model against an untied NNX one
    is bad input."""
    report = _gpt(zg.NnxGPT(tie=True), tie=True, rungs=(2, 3, 4, 5))
    assert report.passed, report.markdown()
    try:
        _gpt(zg.NnxGPT(tie=False), tie=True, rungs=(2,))
    except PortInputError as error:
        assert "NNX arrays no torch layer reaches: lm_head.kernel" in str(error)
    else:
        raise AssertionError("an untied NNX lm_head took no torch weights and was not refused")


# float32 planted bugs cost ~10 s each: `make report` and JAXPORT_FULL=1 run them all,
# `make test` the LayerNorm one (its error against float64 is 37.6 x torch's, the
# issue's measurement; the judgement allows 8)
FULL = bool(os.environ.get("JAXPORT_FULL") or os.environ.get("JAXPORT_REPORT"))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gpt_planted_bugs_fail_at_rung_2_and_are_located(dtype):
    planted = {   # keyword of NnxGPT: the layer the locator names
        "ln_eps": (1e-6, "transformer.h.0.ln_1"),
        # the attention itself is a function between c_attn and c_proj: c_proj is named
        "mask_offset": (1, "transformer.h.0.attn.c_proj"),
        "scale_by": ("embd", "transformer.h.0.attn.c_proj"),
        "gelu_tanh": (True, "transformer.h.0.mlp.c_proj"),
    }
    if dtype == "float32" and not FULL:
        planted = {"ln_eps": planted["ln_eps"]}
    for key, (value, layer) in planted.items():
        report = _gpt(zg.NnxGPT(**{key: value}), dtype, rungs=(2,))
        assert _where(report)[0] == 2 and report.first_failure["layer"] == layer, (key, report.markdown())


def test_nanogpts_own_layernorm_without_a_kind_is_read_as_its_own_arrays():
    """nanoGPT's LayerNorm is a class of its own named like torch's: without a kind in
    `convert` the converter reads its weight and bias as its own arrays (as any class of
    the user's), which the hand port's nnx.LayerNorm (scale, bias) does not hold: bad
    input naming both sides. (jaxport.translate writes the class with weight and bias.)"""
    c = zg.GPTConfig()
    x, y = zg.token_data(8, c)
    with pytest.raises(PortInputError, match=r"no NNX counterpart: transformer\.h\.0\.ln_1\.weight.*"
                                             r"no torch layer reaches: transformer\.h\.0\.ln_1\.scale"):
        check_port(zg.GPT(c), zg.NnxGPT(), x, y, steps=1, batch_size=4, **zg.TRAIN)
