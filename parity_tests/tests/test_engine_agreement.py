"""The project's own examples as ports like any other: check_port, given the two models
the backends' build_model makes and the example's layer kinds (the registry's, an
input like a user's `convert`), agrees with the examples' own ladder (compare): the
correct ports pass, and each of the deep examples' planted bugs fails at the rung
where the deep ladder catches it (test_deep_planted_bugs.py), located at its layer."""
import numpy as np
import pytest

import jaxport.training as jt
import torchref.training as tt
from parity_tests.harness import check_port, locate_divergence
from parity_tests.engine.sides.example_sides import clear_jax_caches
from parity_tests.tests.test_deep_planted_bugs import BUGS
from portcore import registry

# The second tier (`make test-all`): the examples through check_port: every rung, both dtypes, the deep planted bugs.
pytestmark = pytest.mark.slow

ROWS, STEPS, BATCH = 64, 3, 32
# Where the locator (or the failing comparison) must name each planted bug.
LAYER = {"conv kernel converted with .T": "conv1", "flatten left in NHWC order": "drop",    # "arises between bn and drop": the flatten
         "LSTM gates in the wrong order": "rnn", "LSTM bias_hh dropped": "rnn",
         "BatchNorm momentum m instead of 1 - m": "bn"}


def inputs(example: str) -> tuple:
    """The example's two models from its shared initial weights, its data, and the
    arguments check_port and locate_divergence share."""
    record = registry.get(example)
    x, y = registry.make_data(example, 0)
    params = registry.shared_init(example, 0)
    models = (tt.build_model(example, params, dtype="float64"), jt.build_model(example, params, dtype="float64"))
    y = y[:ROWS].astype(np.int64) if record.loss == "cross_entropy" else y[:ROWS]
    return models, x[:ROWS], y, dict(loss=record.loss, convert=dict(record.layers))   # the registry's loss names are the harness's


def as_port(example: str, dtype: str):
    """check_port on the example, with its default optimizer and learning rate."""
    (torch_model, nnx_model), x, y, kw = inputs(example)
    config = registry.get(example).defaults
    momentum = dict(momentum=config.momentum) if config.optimizer == "sgd" else {}
    return check_port(torch_model, nnx_model, x, y, optimizer=config.optimizer, lr=config.lr, steps=STEPS,
                      batch_size=BATCH, dtype=dtype, **momentum, **kw)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("example", registry.TRAINABLE)
def test_an_examples_models_pass_check_port(example, dtype):
    report = as_port(example, dtype)
    assert report.passed, report.markdown()
    # and the locator blames no module of a correct port (conv maps NCHW against NHWC,
    # the flattened map in NNX's H, W, C order before fc)
    (torch_model, nnx_model), x, y, kw = inputs(example)
    assert locate_divergence(torch_model, nnx_model, x, y, dtype=dtype, **kw) is None


@pytest.mark.parametrize("bug", list(BUGS))
def test_a_planted_bug_fails_check_port_where_the_ladder_catches_it(bug, monkeypatch):
    plant, example, rung = BUGS[bug]
    clear_jax_caches()                 # the model skeletons (BatchNorm's momentum) included
    try:
        plant(monkeypatch)
        report = as_port(example, "float64")
    finally:
        monkeypatch.undo()
        clear_jax_caches()
    assert not report.passed
    assert report.first_failure["rung"] == rung, report.markdown()
    assert report.first_failure["layer"] == LAYER[bug], report.markdown()
    if bug == "flatten left in NHWC order":
        assert "between bn and drop" in report.located["note"]
