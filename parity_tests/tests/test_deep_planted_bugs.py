"""The deep examples' planted bugs: each of these layout or convention slips in jaxport
(its conversion or its layers; torch is never touched) must fail a named rung of
parity_tests/engine/rungs/ladder.py (float64; float32 too with JAXPORT_FULL=1), and the rung
that catches it is the first one that can see it."""
import functools
import os

import numpy as np
import pytest

from parity_tests.engine.rungs import ladder as dl
import jaxport.deep_layers as jd
from parity_tests.engine import parity
import portcore.recurrent_kinds as rk
from portcore import registry
from portcore.conv_kinds import Conv2d
from portcore.kinds import Linear
from parity_tests.engine.sides.example_sides import clear_jax_caches


def conv_kernel_dot_T(monkeypatch):
    """OIHW -> HWIO by .T (WHIO): a 3x3 kernel keeps its shape, its entries move."""
    monkeypatch.setattr(Conv2d, "to_flax", lambda self, a: {("kernel",): np.asarray(a["weight"]).T,
                                                            ("bias",): np.asarray(a["bias"])})
    monkeypatch.setattr(Conv2d, "from_flax", lambda self, a: {"weight": np.asarray(a[("kernel",)]).T,
                                                              "bias": np.asarray(a[("bias",)])})


def flatten_left_in_nhwc(monkeypatch):
    """fc's input columns not permuted from torch's C, H, W to NHWC's H, W, C."""
    monkeypatch.setitem(registry.get("cnn").layers, "fc", Linear(128, 10))


def lstm_gates_out_of_order(monkeypatch):
    """torch's gates are i, f, g, o; read as i, g, f, o."""
    monkeypatch.setattr(rk, "LSTM_GATES", (("ii", "hi"), ("ig", "hg"), ("if_", "hf"), ("io", "ho")))


def lstm_bias_dropped(monkeypatch):
    """bias_hh_l0 not carried over: the hidden Linears' biases left at zero."""
    to_flax = rk.LSTM.to_flax

    @functools.wraps(to_flax)
    def planted(self, arrays):
        out = to_flax(self, arrays)
        return {k: (np.zeros_like(v) if k[-2] in ("hi", "hf", "hg", "ho") and k[-1] == "bias" else v)
                for k, v in out.items()}
    monkeypatch.setattr(rk.LSTM, "to_flax", planted)


def batchnorm_momentum_not_flipped(monkeypatch):
    """torch's momentum 0.1 handed to Flax as is: Flax weights the OLD value by it."""
    monkeypatch.setattr(jd, "flax_momentum", lambda m: m)


# name -> (plant, example, the rung that must catch it)
BUGS = {
    "conv kernel converted with .T": (conv_kernel_dot_T, "cnn", 2),
    "flatten left in NHWC order": (flatten_left_in_nhwc, "cnn", 2),
    "LSTM gates in the wrong order": (lstm_gates_out_of_order, "lstm", 2),
    "LSTM bias_hh dropped": (lstm_bias_dropped, "lstm", 2),
    # training-mode outputs use the batch's statistics, so only the running ones after
    # a step can show it
    "BatchNorm momentum m instead of 1 - m": (batchnorm_momentum_not_flipped, "cnn", 4),
}


def _clear():
    clear_jax_caches()                  # the model skeletons (BatchNorm's momentum) included


# Each bug recompiles jaxport's functions: float64 in `make test` (where the tolerance is
# the table's, so a catch is no accident of a measured bound), both in `make report` and
# with JAXPORT_FULL=1.
DTYPES = ["float32", "float64"] if os.environ.get("JAXPORT_FULL") or os.environ.get("JAXPORT_REPORT") else ["float64"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bug", list(BUGS))
def test_deep_planted_bug_is_caught(bug, dtype, monkeypatch, parity_record):
    plant, example, rung = BUGS[bug]
    cell, results = dl.Cell(example, "class", dtype, "cpu"), []
    _clear()
    try:
        plant(monkeypatch)
        for r in (2, 3, 4):
            try:
                with parity.recording():
                    dl.LADDER[r](cell)
                results.append((r, None))
            except parity.ParityError as error:
                results.append((r, str(error)))
                break
    finally:
        monkeypatch.undo()
        _clear()
    parity_record.facts.setdefault("planted", []).append((bug, dtype, {example: results}))   # the report's table
    caught = [r for r, error in results if error]
    assert caught == [rung], f"{bug} ({dtype}): {results}"
    assert f"rung {rung}" in results[-1][1]
