"""check_port on models with several inputs and outputs (pytrees.py): the PyTorch
examples' VAE (parity_tests/tests/zoo_vae.py, from vae/main.py: fc1, fc21, fc22, fc3,
fc4; forward returns (recon, mu, logvar); its loss is BCE summed plus the KL term, a
pair of the user's own), scaled to the 8x8 digits and given its noise `eps` as a second
input (torch.randn_like cannot be drawn alike in JAX); a classifier taking `input_ids`
and `attention_mask` as keywords; and a network returning (logits, features), compared on the leaf `output=0`."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from torch import nn

from parity_tests.harness import PortInputError, check_port
from parity_tests.tests import zoo_vae as zv
from parity_tests.tests.harness_models import assert_passed

TorchVAE, NnxVAE, vae_data = zv.VAE, zv.NnxVAE, zv.vae_data
VAE = dict(**zv.TRAIN, steps=4, batch_size=8)


@pytest.mark.parametrize("dtype", ["float64", pytest.param("float32", marks=pytest.mark.slow)])   # float32: 2nd tier
def test_a_vae_returning_recon_mu_logvar_passes_with_its_own_loss(dtype):
    torch.manual_seed(0)
    x, y = vae_data()
    assert_passed(check_port(TorchVAE(), NnxVAE(), x, y, dtype=dtype, **VAE))


def test_a_vae_bug_between_modules_fails_and_is_located():
    """exp(logvar) for exp(0.5 logvar): the function between fc22 and fc3."""
    torch.manual_seed(0)
    x, y = vae_data()
    report = check_port(TorchVAE(), NnxVAE(half=1.0), x, y, dtype="float64", **VAE)
    assert not report.passed and report.first_failure["rung"] == 2
    assert report.located["layer"] == "fc3" and "arises between fc22 and fc3" in report.located["note"]


def test_a_vae_returning_logvar_negated_fails_and_is_located_by_the_gradient():
    """Only the returned leaf is wrong (z used the right logvar): every module's output
    agrees, the KL term's gradient reaches fc22 with the wrong sign."""
    torch.manual_seed(0)
    x, y = vae_data()
    report = check_port(TorchVAE(), NnxVAE(sign=-1.0), x, y, dtype="float64", **VAE)
    assert not report.passed and report.first_failure["rung"] == 2
    assert (report.located["layer"], report.located["quantity"]) == ("fc22", "gradient"), report.located


class TorchMaskedBag(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed, self.out = nn.Embedding(12, 6), nn.Linear(6, 3)

    def forward(self, input_ids, attention_mask):
        e = self.embed(input_ids) * attention_mask[..., None]
        return self.out(e.sum(1) / attention_mask.sum(1, keepdim=True))


class NnxMaskedBag(nnx.Module):
    def __init__(self, use_mask: bool = True):
        rngs = nnx.Rngs(0)
        self.embed, self.out, self.use_mask = nnx.Embed(12, 6, rngs=rngs), nnx.Linear(6, 3, rngs=rngs), use_mask

    def __call__(self, input_ids, attention_mask):
        mask = attention_mask if self.use_mask else jnp.ones_like(attention_mask)
        e = self.embed(input_ids) * mask[..., None]
        return self.out(e.sum(1) / mask.sum(1, keepdims=True))


def keyword_data(n=24, seed=1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 12, size=(n, 5))
    mask = (np.arange(5)[None, :] < rng.integers(2, 6, size=(n, 1))).astype(np.float64)
    return {"input_ids": ids, "attention_mask": mask}, rng.integers(0, 3, size=n)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_model_taking_input_ids_and_attention_mask_as_keywords_passes(dtype):
    torch.manual_seed(0)
    x, y = keyword_data()
    assert_passed(check_port(TorchMaskedBag(), NnxMaskedBag(), x, y, loss="cross_entropy", optimizer="sgd",
                             lr=0.5, steps=3, batch_size=8, dtype=dtype))


def test_an_ignored_attention_mask_fails_at_rung_2():
    torch.manual_seed(0)
    x, y = keyword_data()
    report = check_port(TorchMaskedBag(), NnxMaskedBag(use_mask=False), x, y, loss="cross_entropy",
                        optimizer="sgd", lr=0.5, steps=3, batch_size=8, dtype="float64")
    assert not report.passed and report.first_failure["rung"] == 2
    # the mask is applied between the modules: embed's output agrees, out's input does not
    assert report.located["layer"] == "out" and "arises between embed and out" in report.located["note"]


class TorchTwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.head = nn.Linear(4, 8), nn.Linear(8, 3)

    def forward(self, x):
        features = torch.tanh(self.body(x))
        return self.head(features), features


class NnxTwoHeads(nnx.Module):
    def __init__(self):
        rngs = nnx.Rngs(0)
        self.body, self.head = nnx.Linear(4, 8, rngs=rngs), nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        features = jnp.tanh(self.body(x))
        return self.head(features), features


def test_a_named_loss_takes_the_output_leaf_it_is_given():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(16, 4)), rng.integers(0, 3, size=16)
    torch.manual_seed(0)
    kw = dict(loss="cross_entropy", optimizer="adam", steps=3, batch_size=8)
    assert_passed(check_port(TorchTwoHeads(), NnxTwoHeads(), x, y, output=0, **kw))
    with pytest.raises(PortInputError, match="output=7: the model's output"):
        check_port(TorchTwoHeads(), NnxTwoHeads(), x, y, output=7, **kw)
    with pytest.raises(PortInputError, match="returns 2 arrays and the loss cross_entropy takes one: pass output="):
        check_port(TorchTwoHeads(), NnxTwoHeads(), x, y, **kw)
