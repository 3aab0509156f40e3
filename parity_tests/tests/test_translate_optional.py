"""jaxport.translate on a class with several optional children (issue 30): instances
that differ in which children they build share one NNX class with a boolean argument
per child; each child's rows run under its own `if self.<child> is not None:` with
torch's stand-in in the `else:`. The port passes every rung of check_port in float64
and float32, and each else branch is what runs where torch's child is None (negated,
rung 2 fails). Without an instance that builds every child, the classes stay numbered
(and pass)."""
import numpy as np
import pytest
import torch
from torch import nn

from jaxport.translate import translate
from parity_tests.tests import harness_models as hm
from parity_tests.tests.test_translate import check_generated, load_source

RUN = dict(loss="mse", optimizer="adam", lr=0.01, batch_size=8)


class GatedBlock(nn.Module):
    """Two optional children: a sigmoid `gate` multiplied in where asked, and a `skip`
    projection added in where the widths differ (else torch's identity)."""

    def __init__(self, cin, cout, gated):
        super().__init__()
        self.fc = nn.Linear(cin, cout)
        self.gate = nn.Linear(cin, cout) if gated else None
        self.skip = nn.Linear(cin, cout, bias=False) if cin != cout else None

    def forward(self, x):
        y = torch.tanh(self.fc(x))
        if self.gate is not None:
            y = y * torch.sigmoid(self.gate(x))
        identity = x if self.skip is None else self.skip(x)
        return y + identity


class GatedNet(nn.Module):
    """The four mixes: neither child, both, the gate alone, the skip alone."""

    def __init__(self, blocks=((4, 4, False), (4, 6, True), (6, 6, True), (6, 8, False))):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.Sequential(*(GatedBlock(*b) for b in blocks))
        self.out = nn.Linear(blocks[-1][1], 1)

    def forward(self, x):
        return self.out(self.blocks(x))


def _features(n=16):
    x = np.random.default_rng(0).normal(size=(n, 4))
    return x, np.tanh(x[:, :1] * x[:, 1:2]) + x[:, 2:3]


def _port(model, x, tmp_path, name="port"):
    source = translate(model, x[:2])
    return source, load_source(source, tmp_path, name)


@pytest.mark.slow    # make test's margin: the else branches below stay in the first tier
def test_two_optional_children_are_one_class_with_a_boolean_each(tmp_path):
    x, y = _features()
    source, generated = _port(GatedNet(), x, tmp_path)
    assert source.count("class GatedBlock(") == 1 and "GatedBlock_2" not in source, source
    assert "def __init__(self, cin, cout, gate, skip, *, rngs" in source, source
    assert "self.gate = jnn.torch_linear(cin, cout, rngs=rngs, dtype=dtype) if gate else None" in source, source
    assert "self.skip = torchops.linear(cin, cout, bias=False, rngs=rngs, dtype=dtype) if skip else None" in source
    for call in ("GatedBlock(cin=4, cout=4, gate=False, skip=False", "GatedBlock(cin=4, cout=6, gate=True, skip=True",
                 "GatedBlock(cin=6, cout=6, gate=True, skip=False", "GatedBlock(cin=6, cout=8, gate=False, skip=True"):
        assert call in source, source
    forward = ("        if self.gate is not None:\n"
               "            gate = self.gate(x)", "            mul = tanh * sigmoid\n"
               "        else:\n"
               "            mul = tanh  # torch's gate is None here\n"
               "        if self.skip is not None:\n"
               "            skip = self.skip(x)", "        else:\n"
               "            skip = x  # torch's skip is None here\n"
               "        add = mul + skip")
    assert all(part in source for part in forward), source
    for dtype in ("float64", "float32"):
        hm.assert_passed(check_generated(GatedNet(), generated, x, y, dtype, **RUN))


@pytest.mark.parametrize("stand_in", ["mul = tanh", "skip = x"])
def test_each_else_branch_is_what_runs_where_torchs_child_is_none(stand_in, tmp_path):
    """Planted: one else branch negated; rung 2 fails (two of the four blocks run it)."""
    x, y = _features()
    source = translate(GatedNet(), x[:2])
    old = f"            {stand_in}  #"
    assert source.count(old) == 1, source
    name, value = stand_in.split(" = ")
    planted = load_source(source.replace(old, f"            {name} = -{value}  #"), tmp_path, "planted")
    report = check_generated(GatedNet(), planted, x, y, "float64", rungs=(2,), **RUN)
    assert not report.passed and report.first_failure["rung"] == 2, report.markdown()


def test_without_an_instance_that_builds_every_child_the_classes_stay_numbered(tmp_path):
    """The gate alone and the skip alone: no instance's code has both, so no merged
    forward to write from; two classes, the second with the comment, and both pass."""
    x, y = _features()
    model = lambda: GatedNet(blocks=((4, 4, True), (4, 6, False)))      # noqa: E731
    source, generated = _port(model(), x, tmp_path)
    assert "class GatedBlock(" in source and "class GatedBlock_2(" in source, source
    assert "# GatedBlock_2: torch's GatedBlock too" in source, source
    for dtype in ("float64", "float32"):
        hm.assert_passed(check_generated(model(), generated, x, y, dtype, **RUN))
