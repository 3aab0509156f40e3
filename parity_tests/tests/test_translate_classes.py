"""jaxport.translate writes one NNX class per torch class (issue 30): instances that
differ only in constructor arguments (widths, a stride, an optional downsample) share
a class that takes them as __init__ arguments; instances that differ beyond that keep
numbered classes, with a comment saying why. The generated ports pass every rung of
check_port in float64 and float32. (torchvision's resnet18 itself: test_translate.py,
slow tier.)"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from jaxport.translate import cli, translate
from jaxport.translate.init_args import init_arg_values
from parity_tests.harness import check_port
from parity_tests.tests import harness_models as hm
from parity_tests.tests import zoo_resnet18 as zr


class TinyBlock(nn.Module):
    """A ResNet basic block: its downsample exists only where the width or stride changes
    (None otherwise, a plain attribute, as torchvision's)."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride = stride
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.down is None else self.down(x)
        return F.relu(out + identity)


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(1, 4, 3, 1, 1)
        self.layers = nn.Sequential(TinyBlock(4, 4), TinyBlock(4, 8, 2), TinyBlock(8, 8), TinyBlock(8, 16, 2))
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(self.layers(F.relu(self.stem(x))).mean(dim=(2, 3)))


class Scaled(nn.Module):
    """A number used in forward (factor) and widths in __init__."""

    def __init__(self, width_in, width_out, factor):
        super().__init__()
        self.fc, self.factor = nn.Linear(width_in, width_out), factor

    def forward(self, x):
        return torch.tanh(self.fc(x)) * self.factor


class ScaledNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.out = Scaled(4, 6, 0.5), Scaled(6, 6, 2.0), nn.Linear(6, 1)

    def forward(self, x):
        return self.out(self.b(self.a(x)))


class Head(nn.Module):
    """Two instances with other forwards (a flag read in forward, not a child)."""

    def __init__(self, width, squash):
        super().__init__()
        self.fc, self.squash = nn.Linear(width, width), squash

    def forward(self, x):
        x = self.fc(x)
        return torch.tanh(x) if self.squash else x


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.out = Head(4, True), Head(4, False), nn.Linear(4, 1)

    def forward(self, x):
        return self.out(self.b(self.a(x)))


class SideBlock(nn.Module):
    """An optional branch added in (`y = y + self.side(x)`), of its own width k where it exists."""

    def __init__(self, c, k=None):
        super().__init__()
        self.fc = nn.Linear(c, c)
        if k:
            self.side = nn.Sequential(nn.Linear(c, k), nn.Tanh(), nn.Linear(k, c))

    def forward(self, x):
        y = self.fc(x)
        if hasattr(self, "side"):
            y = y + self.side(x)
        return torch.relu(y)


class SideNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.blocks, self.out = nn.Sequential(SideBlock(4), SideBlock(4, 3), SideBlock(4, 5)), nn.Linear(4, 1)

    def forward(self, x):
        return self.out(self.blocks(x))


def _images(n=16):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 1, 8, 8))
    return x, (x[:, 0, :4].sum((1, 2)) > 0).astype(np.int64) + (x[:, 0, :, :4].sum((1, 2)) > 0)


def _features(n=16):
    x = np.random.default_rng(0).normal(size=(n, 4))
    return x, np.tanh(x[:, :1] - x[:, 1:2])


def _port(model, x, tmp_path):
    source = translate(model, x[:2])
    path = tmp_path / "port.py"
    path.write_text(source)
    return source, cli.load_generated(str(path))


def _passes_both_dtypes(model, generated, x, y, **kw):
    for dtype in ("float64", "float32"):
        report = check_port(model, generated.make_model(), x, y, dtype=dtype, steps=3, batch_size=8, **kw)
        hm.assert_passed(report)


@pytest.mark.slow    # check_port on a ResNet-like model in both dtypes: the second tier
def test_blocks_of_other_widths_strides_and_an_optional_downsample_are_one_class(tmp_path):
    x, y = _images()
    source, generated = _port(TinyResNet(), x, tmp_path)
    assert source.count("class TinyBlock(") == 1 and "TinyBlock_2" not in source, source
    assert "def __init__(self, cin, cout, stride, down, *, rngs" in source, source     # torch's names
    assert "stride=stride" in source and "if down else None" in source, source
    assert "    if self.down is not None:\n" in source and "else:\n            down = x" in source, source
    for call in ("TinyBlock(cin=4, cout=4, stride=1, down=False",
                 "TinyBlock(cin=4, cout=8, stride=2, down=True",
                 "TinyBlock(cin=8, cout=8, stride=1, down=False",
                 "TinyBlock(cin=8, cout=16, stride=2, down=True"):
        assert call in source, source
    assert "self.layers = nnx.Sequential(" in source, source    # torch's Sequential of blocks, inline
    _passes_both_dtypes(TinyResNet(), generated, x, y, loss="cross_entropy", optimizer="sgd", lr=0.05)


def test_a_number_read_in_forward_is_an_argument_kept_on_the_instance(tmp_path):
    x, y = _features()
    source, generated = _port(ScaledNet(), x, tmp_path)
    assert source.count("class Scaled(") == 1 and "Scaled_2" not in source, source
    assert "self.factor = factor" in source and "* self.factor" in source, source
    assert "Scaled(width_in=4, factor=0.5" in source, source       # width_out: 6 in both, no argument
    assert "Scaled(width_in=6, factor=2.0" in source, source
    assert "jnn.torch_linear(width_in, 6, " in source, source
    _passes_both_dtypes(ScaledNet(), generated, x, y, loss="mse", optimizer="adam", lr=0.01)


@pytest.mark.slow    # check_port on a ResNet-like model in both dtypes: the second tier
def test_an_optional_branch_with_a_width_of_its_own_is_one_class_with_a_default_argument(tmp_path):
    """The branch's width exists only where the branch does: an argument defaulting to
    None, left out where the branch is; forward adds the branch under the guard."""
    x, y = _features()
    source, generated = _port(SideNet(), x, tmp_path)
    assert source.count("class SideBlock(") == 1 and "SideBlock_2" not in source, source
    assert "def __init__(self, side, k=None, *, rngs" in source, source    # k reaches side's Linears
    assert "SideBlock(side=False, rngs" in source and "SideBlock(k=5, side=True, rngs" in source, source
    assert "            add = fc + side\n        else:\n            add = fc" in source, source
    _passes_both_dtypes(SideNet(), generated, x, y, loss="mse", optimizer="adam", lr=0.01)


def test_instances_with_other_forwards_keep_numbered_classes_with_a_comment(tmp_path):
    x, y = _features()
    source, generated = _port(TwoHeads(), x, tmp_path)
    assert "class Head(" in source and "class Head_2(" in source, source
    assert "# Head_2: torch's Head too, but with another forward than Head's" in source, source
    _passes_both_dtypes(TwoHeads(), generated, x, y, loss="mse", optimizer="adam", lr=0.01)


class Square(nn.Module):
    """width and hidden are equal in every instance: which one an argument is cannot be told."""

    def __init__(self, width, hidden):
        super().__init__()
        self.fc = nn.Linear(width, hidden)

    def forward(self, x):
        return torch.tanh(self.fc(x))


class SquareNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.widen, self.b, self.out = Square(4, 4), nn.Linear(4, 6), Square(6, 6), nn.Linear(6, 1)

    def forward(self, x):
        return self.out(self.b(self.widen(self.a(x))))


class Doubled(nn.Module):
    def __init__(self, width):
        super().__init__()
        width = width * 2                   # the Linear holds the changed value, not the argument
        self.fc = nn.Linear(width, 3)


def test_torchs_names_only_where_the_instances_tell_them_apart(tmp_path):
    x, y = _features()
    source, generated = _port(SquareNet(), x, tmp_path)
    assert "def __init__(self, in_features, *, rngs" in source, source       # not width, not hidden
    assert "Square(in_features=4, rngs" in source and "Square(in_features=6, rngs" in source, source
    _passes_both_dtypes(SquareNet(), generated, x, y, loss="mse", optimizer="adam", lr=0.01)
    assert init_arg_values(Doubled(2)) == {} and init_arg_values(Square(3, 5)) == {"width": 3, "hidden": 5}


def test_resnet18s_basic_blocks_are_one_class_with_torchvisions_arguments():
    """The code alone (check_port on it: test_translate.py's resnet18 test, slow tier)."""
    torch.manual_seed(0)
    source = translate(zr.resnet18(num_classes=3), torch.zeros(2, 3, 32, 32))
    assert source.count("class BasicBlock(") == 1 and "BasicBlock_" not in source, source
    # torchvision's own names: inplanes reaches conv1's in_channels and planes its
    # out_channels through conv3x3, stride is an attribute
    assert "def __init__(self, inplanes, planes, stride, downsample, *, rngs" in source, source
    assert "self.conv1 = jnn.conv2d(inplanes, planes, 3, stride=stride," in source, source
    assert "self.bn1 = jnn.TorchBatchNorm(planes," in source, source
    for inplanes, planes, stride, downsample in [(64, 64, 1, False), (64, 128, 2, True), (128, 128, 1, False),
                                                 (128, 256, 2, True), (256, 512, 2, True), (512, 512, 1, False)]:
        assert (f"BasicBlock(inplanes={inplanes}, planes={planes}, stride={stride}, downsample={downsample}"
                in source), source
    assert source.count("\nclass ") == 3, source          # BasicBlock, its downsample Sequential, ResNet


@pytest.mark.slow    # check_port on a ResNet-like model in both dtypes: the second tier
def test_the_identity_branch_of_the_merged_block_is_what_runs_where_torch_has_no_downsample(tmp_path):
    """Planted: the else branch (torch's identity) negated: rung 2 fails. The blocks
    without a downsample do run the merged class's else branch."""
    x, y = _images()
    source = translate(TinyResNet(), x[:2])
    assert source.count("            down = x  #") == 1, source
    path = tmp_path / "planted.py"
    path.write_text(source.replace("            down = x  #", "            down = -x  #"))
    report = check_port(TinyResNet(), cli.load_generated(str(path)).make_model(), x, y, dtype="float64", steps=3,
                        batch_size=8, loss="cross_entropy", optimizer="sgd", lr=0.05, rungs=(2,))
    assert not report.passed and report.first_failure["rung"] == 2, report.markdown()


@pytest.mark.slow    # check_port on a ResNet-like model in both dtypes: the second tier
def test_variants_the_renderer_cannot_merge_fall_back_to_numbered_classes(tmp_path, monkeypatch):
    from jaxport.translate import render                                 # noqa: PLC0415
    from jaxport.translate.optional import merge_plan                    # noqa: PLC0415

    def alike_only(full_init, full_call, others):     # the forwards of blocks that differ "will not merge"
        return merge_plan(full_init, full_call, others) if all(o == (full_init, full_call) for o in others) else None
    monkeypatch.setattr(render, "merge_plan", alike_only)
    x, y = _images()
    source, generated = _port(TinyResNet(), x, tmp_path)
    assert "class TinyBlock(" in source and "class TinyBlock_2(" in source, source
    assert "# TinyBlock_2: torch's TinyBlock too" in source, source
    assert "TinyBlock_2(cin=8, cout=16" in source, source     # each still takes its widths
    report = check_port(TinyResNet(), generated.make_model(), x, y, dtype="float64", steps=3, batch_size=8,
                        loss="cross_entropy", optimizer="sgd", lr=0.05)
    hm.assert_passed(report)
