"""What training loops add to a step: gradient clipping by global norm with torch's
arithmetic (port_clip.py), as the PyTorch examples' word-level LM (0.25) and nanoGPT
(1.0) clip between backward() and step()."""
import jax
import jax.numpy as jnp
import pytest
import torch

from examples.own_port import NnxMLP, TorchMLP, make_data
from parity_tests.engine.sides import port_clip
from parity_tests.harness import PortInputError, check_port
from parity_tests.tests.harness_models import assert_passed

# max_norm 0.05 is well under the MLP's gradient norm at init (about 1): every step clips
RUN = dict(loss="mse", optimizer="adam", lr=1e-2, steps=6, batch_size=16, clip_grad_norm=0.05)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_clipped_port_passes(dtype):
    torch.manual_seed(0)
    x, y = make_data()
    report = check_port(TorchMLP(), NnxMLP(), x, y, dtype=dtype, **RUN)
    assert_passed(report)
    assert "clip_grad_norm_ 0.05" in report.settings["optimizer"]


def optax_style(grads, max_norm):
    """optax.clip_by_global_norm's arithmetic: no 1e-6 in the divisor."""
    leaves, treedef = jax.tree.flatten(grads)
    norm = jnp.sqrt(sum(jnp.sum(g ** 2) for g in leaves))
    return jax.tree.unflatten(treedef, [g * jnp.where(norm < max_norm, 1.0, max_norm / norm) for g in leaves])


@pytest.mark.parametrize("plant", [optax_style, lambda grads, max_norm: grads], ids=["optax's arithmetic", "not clipped"])
def test_clipping_that_is_not_torchs_fails_at_the_first_step(plant, monkeypatch):
    monkeypatch.setattr(port_clip, "torch_clip", plant)
    torch.manual_seed(0)
    x, y = make_data()
    report = check_port(TorchMLP(), NnxMLP(), x, y, dtype="float64", locate=False, **RUN)
    assert not report.passed and report.first_failure["rung"] == 4, report.first_failure


@pytest.mark.parametrize("value", [0, -1.0, "1", True])
def test_a_clip_that_is_not_a_positive_number_is_bad_input(value):
    x, y = make_data()
    with pytest.raises(PortInputError, match="clip_grad_norm must be a positive number"):
        check_port(TorchMLP(), NnxMLP(), x, y, **{**RUN, "clip_grad_norm": value})


# ---- parameter groups: weight decay off biases and norms (nanoGPT's configure_optimizers) ----
def biases_and_norms(name):
    return name.endswith(".bias") or name.startswith("norm.")


DECAY = {"adamw": dict(optimizer="adamw", lr=1e-2, weight_decay=0.1),
         "sgd": dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=0.1)}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("opt", list(DECAY))
def test_weight_decay_kept_off_biases_and_norms_passes(opt, dtype):
    torch.manual_seed(0)
    x, y = make_data()
    report = check_port(TorchMLP(), NnxMLP(), x, y, dtype=dtype, loss="mse", steps=4, batch_size=16,
                        rungs=(2, 3, 4, 5), no_decay=biases_and_norms, **DECAY[opt])
    assert_passed(report, (2, 3, 4, 5))
    assert "no weight decay on 4 of 6 tensors" in report.settings["optimizer"]


@pytest.mark.parametrize("plant", ["decay everything", "decay nothing"])
@pytest.mark.parametrize("opt", list(DECAY))
def test_groups_that_are_not_torchs_fail_at_the_first_step(opt, plant, monkeypatch):
    """The JAX side's groups planted wrong (the torch side keeps its two groups): all
    tensors decayed, as optax.adamw without a mask does, or none."""
    from parity_tests.engine.sides import port_groups
    real = port_groups.decayed_nnx_paths
    monkeypatch.setattr(port_groups, "decayed_nnx_paths",
                        lambda port, no_decay: {p: plant == "decay everything" for p in real(port, no_decay)})
    torch.manual_seed(0)
    x, y = make_data()
    report = check_port(TorchMLP(), NnxMLP(), x, y, dtype="float64", loss="mse", steps=4, batch_size=16,
                        rungs=(2, 3, 4, 5), locate=False, no_decay=biases_and_norms, **DECAY[opt])
    assert not report.passed and report.first_failure["rung"] == 4, report.first_failure


def test_an_nnx_array_built_from_decayed_and_undecayed_torch_arrays_is_bad_input():
    """A stock nnx.LSTMCell holds bias_ih + bias_hh in one bias: one group or the other."""
    from flax import nnx
    from parity_tests.tests import harness_models as hm
    x, y = hm.lstm_data(16)
    with pytest.raises(PortInputError, match=r"NNX rnn.cell.hi.bias is built from torch arrays with and without "
                                             r"weight decay \(rnn.bias_hh_l0, rnn.bias_ih_l0\)"):
        check_port(hm.TorchLSTMClassifier(), hm.NnxRecurrentClassifier(cell=nnx.LSTMCell), x, y, loss="cross_entropy",
                   optimizer="adamw", no_decay=lambda n: n == "rnn.bias_ih_l0", steps=2, batch_size=8)


@pytest.mark.parametrize("kw, message", [
    (dict(optimizer="adam"), "no_decay is given but adam has no weight decay"),
    (dict(optimizer="sgd", weight_decay=0.1, no_decay="bias"), "no_decay must be a function of a torch parameter name"),
    (dict(optimizer="adamw", no_decay=lambda n: "bias" if n else None), r"no_decay\('inp.weight'\) returned 'bias'"),
])
def test_no_decay_that_does_not_fit_is_bad_input(kw, message):
    x, y = make_data()
    kw = {"no_decay": biases_and_norms, **kw}
    with pytest.raises(PortInputError, match=message):
        check_port(TorchMLP(), NnxMLP(), x, y, loss="mse", steps=2, batch_size=16, **kw)


@pytest.mark.filterwarnings("error::UserWarning")     # torch's "step() overridden after the scheduler"
def test_groups_clipping_and_a_schedule_together():
    torch.manual_seed(0)
    x, y = make_data()
    report = check_port(TorchMLP(), NnxMLP(), x, y, dtype="float64", loss="mse", steps=4, batch_size=16,
                        rungs=(2, 3, 4, 5), no_decay=biases_and_norms, clip_grad_norm=0.05,
                        schedule=dict(kind="step", step_size=2, gamma=0.5), **DECAY["sgd"])
    assert_passed(report, (2, 3, 4, 5))
