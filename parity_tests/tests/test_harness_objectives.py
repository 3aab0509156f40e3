"""The harness's losses (parity_tests/engine/sides/port_losses.py): cross_entropy with torch's
class axis 1 and trailing dims (a next-token model's (N, V, T) logits), label_smoothing
and ignore_index, nll_loss, a caller's own (torch, JAX) pair; correct ports pass in
both dtypes, planted bugs fail at rung 2, shapes that do not fit are bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from flax import nnx
from torch import nn

from jaxport.numerics import dtype_scope
from parity_tests.engine.port_cli import main
from parity_tests.engine.sides.port_losses import objective
from parity_tests.harness import PortInputError, check_port, locate_divergence

VOCAB, WIDTH, T = 7, 5, 6


class TorchNextToken(nn.Module):
    """Embedding, tanh, Linear: (N, T) tokens -> (N, V, T) logits, torch's class axis 1."""

    def __init__(self, log_probs: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.out, self.log_probs = nn.Embedding(VOCAB, WIDTH), nn.Linear(WIDTH, VOCAB), log_probs

    def forward(self, tokens):
        logits = self.out(torch.tanh(self.embed(tokens))).transpose(1, 2)
        return F.log_softmax(logits, dim=1) if self.log_probs else logits


class NnxNextToken(nnx.Module):
    def __init__(self, log_probs: bool = False, time_last: bool = True):
        rngs = nnx.Rngs(0)
        self.embed, self.out = nnx.Embed(VOCAB, WIDTH, rngs=rngs), nnx.Linear(WIDTH, VOCAB, rngs=rngs)
        self.log_probs, self.time_last = log_probs, time_last

    def __call__(self, tokens):
        logits = self.out(jnp.tanh(self.embed(tokens)))          # (N, T, V), Flax's layout
        logits = jax.nn.log_softmax(logits, axis=-1) if self.log_probs else logits
        return jnp.swapaxes(logits, 1, 2) if self.time_last else logits


def token_data(n=24, seed=5, ignore=None):
    """Sequences and their next tokens (0 is never a target: the pad id); the last two
    targets of every other row are `ignore`."""
    rng = np.random.default_rng(seed)
    x = rng.integers(1, VOCAB, size=(n, T))
    y = np.concatenate([x[:, 1:], rng.integers(1, VOCAB, size=(n, 1))], axis=1)
    if ignore is not None:
        y[::2, -2:] = ignore
    return x, y


def _used(report) -> float:
    return max(r.used for r in report.rows)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_next_token_cross_entropy_with_smoothing_and_ignore_passes(dtype):
    """(N, V, T) logits against (N, T) targets: the crash inside optax's loss is gone;
    label_smoothing 0.1 and ignored targets (id 0) agree with torch in both dtypes."""
    x, y = token_data(ignore=0)
    report = check_port(TorchNextToken(), NnxNextToken(), x, y, loss="cross_entropy",
                        loss_options=dict(label_smoothing=0.1, ignore_index=0), optimizer="adam", lr=0.05,
                        steps=6, batch_size=12, dtype=dtype)
    assert report.passed, report.markdown()
    assert {r.rung for r in report.rows} == {2, 3, 4, 5, 6, 7} and _used(report) <= 1.0
    assert report.settings["loss"] == "cross_entropy label_smoothing 0.1 ignore_index 0"
    loss_row = next(r for r in report.rows if (r.rung, r.quantity) == (2, "loss"))
    assert loss_row.max_abs < (1e-14 if dtype == "float64" else 1e-6)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_nll_loss_on_log_probabilities_with_torchs_default_ignore_index_passes(dtype):
    x, y = token_data(ignore=-100)
    report = check_port(TorchNextToken(log_probs=True), NnxNextToken(log_probs=True), x, y, loss="nll_loss",
                        optimizer="sgd", lr=0.5, steps=6, batch_size=12, dtype=dtype)
    assert report.passed, report.markdown()
    assert _used(report) <= 1.0


def test_the_jax_losses_equal_torchs_to_roundoff():
    """float64, random (N, C, d1, d2) and (N, C) scores with ignored targets: each JAX
    loss equals torch's F.cross_entropy / F.nll_loss to 1e-14 relative."""
    rng = np.random.default_rng(0)
    with dtype_scope("float64"):
        for shape in [(5, 4, 3, 2), (9, 6)]:
            out = rng.normal(size=shape) * 3
            labels = rng.integers(0, shape[1], size=(shape[0], *shape[2:]))
            ignored = np.arange(labels.size).reshape(labels.shape) % 4 == 0
            for name, opts in [("cross_entropy", {}), ("cross_entropy", dict(label_smoothing=0.2)),
                               ("cross_entropy", dict(label_smoothing=0.1, ignore_index=2)), ("nll_loss", {})]:
                obj = objective(name, opts)
                y = np.where(ignored, opts.get("ignore_index", -100), labels)
                scores = F.log_softmax(torch.tensor(out), 1) if name == "nll_loss" else torch.tensor(out)
                expected = float(obj.torch(scores, torch.tensor(y)))
                actual = float(obj.jax(jnp.asarray(scores.numpy()), jnp.asarray(y)))
                assert abs(actual - expected) <= 1e-14 * abs(expected), (shape, name, opts, actual, expected)


def _smoothed_pair(eps_jax, ignore_index=-100, honour_ignore=True):
    """A caller's own pair: torch's F.cross_entropy, and optax's smoothed labels on the
    JAX side (classes moved to the last axis)."""
    def jax_loss(out, y):
        logits = jnp.moveaxis(out, 1, -1)
        kept = y != ignore_index if honour_ignore else jnp.ones(y.shape, bool)
        labels = optax.smooth_labels(jax.nn.one_hot(jnp.where(kept, y, 0), VOCAB, dtype=logits.dtype), eps_jax)
        each = optax.softmax_cross_entropy(logits, labels)
        return jnp.sum(jnp.where(kept, each, 0)) / jnp.sum(kept)
    return (lambda out, y: F.cross_entropy(out, y, label_smoothing=0.1, ignore_index=ignore_index), jax_loss)


def test_a_callers_own_loss_pair_passes_and_its_planted_bugs_fail_at_rung_2():
    """optax.smooth_labels(eps) spreads eps over all C classes as torch does: the
    correct pair passes (float64, every rung); label smoothing 0.11 for torch's 0.1,
    or ignored targets counted in the mean, fail at rung 2's loss."""
    x, y = token_data(ignore=0)
    kw = dict(optimizer="adam", lr=0.05, steps=4, batch_size=12, dtype="float64")
    report = check_port(TorchNextToken(), NnxNextToken(), x, y, loss=_smoothed_pair(0.1, 0), **kw)
    assert report.passed, report.markdown()
    assert report.settings["loss"] == "custom (torch, JAX) pair"
    for bug in (_smoothed_pair(0.11, 0), _smoothed_pair(0.1, 0, honour_ignore=False)):
        report = check_port(TorchNextToken(), NnxNextToken(), x, y, loss=bug, **kw)
        f = report.first_failure
        assert (f["rung"], f["quantity"]) == (2, "loss"), report.markdown()
        assert f["max_rel"] > 1e-4          # the table allows 1e-10
    # with torch's default ignore_index the pad id 0 is a class like any other: the
    # same pair without the ignored targets agrees
    x, y = token_data()
    assert check_port(TorchNextToken(), NnxNextToken(), x, y, loss=_smoothed_pair(0.1), rungs=(2, 3), **kw).passed


@pytest.mark.parametrize("kwargs, message", [
    (dict(y=token_data()[1][:, :-1]), r"cross_entropy needs \(N, classes\) outputs for \(N,\) labels, or "
                                      r"\(N, classes, d1, \.\.\.\) for \(N, d1, \.\.\.\): output per row \(7, 6\), "
                                      r"y's \(5,\)"),
    (dict(y=np.full((24, T), 7)), r"class labels in y run 7\.\.7, the model has 7 classes \(ignore_index -100\)"),
    (dict(y=np.full((24, T), -1)), r"class labels in y run -1\.\.-1"),
    (dict(y=np.full((24, T), -100)), "every target in y is ignore_index -100"),
    (dict(nnx_model=NnxNextToken(time_last=False)), r"the NNX model's output has shape \(2, 6, 7\) on x\[:2\], "
                                                    r"torch's \(2, 7, 6\)"),
    (dict(loss_options=dict(label_smoothing=0.1, reduction="sum")), "loss cross_entropy takes no option reduction"),
    (dict(loss="nll_loss", loss_options=dict(label_smoothing=0.1)), "loss nll_loss takes no option label_smoothing"),
    (dict(loss_options=dict(label_smoothing=1.5)), r"label_smoothing must lie in \[0, 1\]"),
    (dict(loss=(lambda o, y: F.cross_entropy(o, y, reduction="none"), lambda o, y: o)),
     r"the loss must be a scalar: torch's has shape \(2, 6\)"),
    (dict(loss=(F.cross_entropy, lambda o, y: o @ y)), "the loss custom .* cannot take the outputs"),
])
def test_shapes_and_labels_that_do_not_fit_are_bad_input(kwargs, message):
    x, y = token_data()
    kwargs = {"loss": "cross_entropy", "nnx_model": NnxNextToken(), "y": y, **kwargs}
    with pytest.raises(PortInputError, match=message):
        check_port(TorchNextToken(), kwargs.pop("nnx_model"), x, kwargs.pop("y"), steps=2, **kwargs)


def test_the_cli_takes_loss_options_and_refuses_a_shape_mismatch(tmp_path, capsys):
    x, y = token_data(ignore=0)
    good, bad = tmp_path / "tokens.npz", tmp_path / "short.npz"
    np.savez(good, x=x, y=y)
    np.savez(bad, x=x, y=y[:, :-1])
    models = [f"{__name__}:TorchNextToken", f"{__name__}:NnxNextToken"]
    args = ["check", *models, "--loss", "cross_entropy", "--label-smoothing", "0.1", "--ignore-index", "0",
            "--steps", "3", "--batch-size", "12", "--lr", "0.05"]
    assert main([*args, "--data", str(good)]) == 0
    assert "cross_entropy label_smoothing 0.1 ignore_index 0" in capsys.readouterr().out
    assert main([*args, "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: cross_entropy needs (N, classes) outputs")


def test_locate_divergence_takes_loss_options():
    """A correct next-token port: every module's output and gradient agree under
    smoothing and ignored targets (float64, half the locator's tolerance); a
    planted tanh -> sigmoid on the NNX side is located at `out` (its output differs)."""
    x, y = token_data(ignore=0)
    kw = dict(loss="cross_entropy", loss_options=dict(label_smoothing=0.1, ignore_index=0))
    assert locate_divergence(TorchNextToken(), NnxNextToken(), x, y, rtol=5e-11, **kw) is None

    class Sigmoid(NnxNextToken):
        def __call__(self, tokens):
            return jnp.swapaxes(self.out(jax.nn.sigmoid(self.embed(tokens))), 1, 2)
    where = locate_divergence(TorchNextToken(), Sigmoid(), x, y, **kw)
    assert where is not None and where["layer"] == "out" and where["quantity"] == "output", where


class TorchSaturated(nn.Module):
    """Linear -> Sigmoid whose logits reach +-60: sigmoid is exactly 0 or 1 there in both
    dtypes, where BCELoss's clamped logs have no derivative and torch's backward is
    (p - y) / max(p (1 - p), 1e-12) instead."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 1)
        with torch.no_grad():
            self.fc.weight.mul_(60.0)

    def forward(self, x):
        return torch.sigmoid(self.fc(x))


class NnxSaturated(nnx.Module):
    def __init__(self):
        self.fc = nnx.Linear(4, 1, rngs=nnx.Rngs(0))

    def __call__(self, x):
        return jax.nn.sigmoid(self.fc(x))


def _clamped_logs_only(p, y):
    """BCELoss's forward, differentiated as written (the harness's JAX side before)."""
    return -jnp.mean(y * jnp.maximum(jnp.log(p), -100.0) + (1 - y) * jnp.maximum(jnp.log1p(-p), -100.0))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_bce_on_a_saturated_sigmoid_passes_and_the_clamped_logs_derivative_fails(dtype):
    """A DCGAN discriminator trained with BCELoss at lr 0.05 saturated its sigmoid and a
    correct port failed rung 5 (NaN gradients in float32, 12% off in float64): the
    JAX side differentiated the clamped logs. It now has torch's backward."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)), (rng.random((16, 1)) < 0.5).astype(np.float64)
    with torch.no_grad():
        p = TorchSaturated().to(getattr(torch, dtype))(torch.tensor(x, dtype=getattr(torch, dtype))).numpy()
    assert ((p == 0) | (p == 1)).sum() >= 4                      # saturated rows, both ways
    kw = dict(loss="bce", optimizer="sgd", lr=0.01, momentum=0.0, steps=4, batch_size=8, dtype=dtype)
    report = check_port(TorchSaturated(), NnxSaturated(), x, y, **kw)
    assert report.passed, report.markdown()
    kw["loss"] = (F.binary_cross_entropy, _clamped_logs_only)
    wrong = check_port(TorchSaturated(), NnxSaturated(), x, y, **kw, locate=False)
    assert not wrong.passed and wrong.first_failure["rung"] == 3, wrong.markdown()
