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
