"""The PyTorch examples' VAE, ported to Flax NNX for the port harness (issue 28, "the
harness takes public models as people write them").

Source: pytorch/examples, `vae/main.py` (class `VAE`: fc1 784->400, fc21 and fc22
400->20, fc3 20->400, fc4 400->784; `encode`, `reparameterize`, `decode`; forward
returns (recon, mu, logvar); `loss_function` = BCE(recon, x, reduction='sum') + KLD,
KLD = -0.5 * sum(1 + logvar - mu^2 - exp(logvar)); `optim.Adam(lr=1e-3)`). Written from
that definition with two changes: the sizes scaled to the repository's 8x8 digits
(64 -> 32 -> 4), and the noise `eps` a second input (`reparameterize` draws it with
torch.randn_like, which JAX cannot draw alike): `forward(x, eps)`.

The loss is the user's own pair (check_port's `loss=(torch_fn, jax_fn)`), taking the
whole output (recon, mu, logvar); the JAX BCE clamps its logs at -100 as torch's does.

Planted porting bugs (NnxVAE's keywords): `half=1.0` (std = exp(logvar) for
exp(0.5 logvar)), `sign=-1.0` (logvar returned negated, z computed from the right one),
`decode_relu=False` (decode's ReLU after fc3 left out).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
from flax import nnx
from torch import nn

from portcore import digits

D, H, Z = 64, 32, 4          # vae/main.py: 784, 400, 20


class VAE(nn.Module):
    """pytorch/examples vae/main.py's VAE, its sizes scaled and eps an input."""

    def __init__(self):
        super(VAE, self).__init__()

        self.fc1 = nn.Linear(D, H)
        self.fc21 = nn.Linear(H, Z)
        self.fc22 = nn.Linear(H, Z)
        self.fc3 = nn.Linear(Z, H)
        self.fc4 = nn.Linear(H, D)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar, eps):
        std = torch.exp(0.5 * logvar)
        return mu + eps * std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x, eps):
        mu, logvar = self.encode(x.view(-1, D))
        z = self.reparameterize(mu, logvar, eps)
        return self.decode(z), mu, logvar


def loss_function(out, x):
    """vae/main.py's loss_function(recon_x, x, mu, logvar) on check_port's (output, y)."""
    recon_x, mu, logvar = out
    BCE = F.binary_cross_entropy(recon_x, x.view(-1, D), reduction='sum')
    KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return BCE + KLD


class NnxVAE(nnx.Module):
    def __init__(self, half: float = 0.5, sign: float = 1.0, decode_relu: bool = True, seed: int = 0):
        rngs = nnx.Rngs(seed)
        self.fc1 = nnx.Linear(D, H, rngs=rngs)
        self.fc21 = nnx.Linear(H, Z, rngs=rngs)
        self.fc22 = nnx.Linear(H, Z, rngs=rngs)
        self.fc3 = nnx.Linear(Z, H, rngs=rngs)
        self.fc4 = nnx.Linear(H, D, rngs=rngs)
        self.half, self.sign, self.decode_relu = half, sign, decode_relu

    def encode(self, x):
        h1 = nnx.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar, eps):
        return mu + eps * jnp.exp(self.half * logvar)

    def decode(self, z):
        h3 = self.fc3(z)
        return jax.nn.sigmoid(self.fc4(nnx.relu(h3) if self.decode_relu else h3))

    def __call__(self, x, eps):
        mu, logvar = self.encode(x.reshape(-1, D))
        z = self.reparameterize(mu, logvar, eps)
        return self.decode(z), mu, self.sign * logvar


def jax_loss_function(out, x):
    recon_x, mu, logvar = out
    x = x.reshape(-1, D)
    bce = -jnp.sum(x * jnp.maximum(jnp.log(recon_x), -100.0) + (1 - x) * jnp.maximum(jnp.log1p(-recon_x), -100.0))
    return bce - 0.5 * jnp.sum(1 + logvar - mu ** 2 - jnp.exp(logvar))


def vae_data(n: int = 32, seed: int = 0):
    """((images (n, 64) in [0, 1], eps (n, Z) ~ N(0, 1)), images): the 8x8 digits."""
    x, _ = digits.load_digits()
    rng = np.random.default_rng(seed)
    images = x[rng.choice(len(x), n, replace=False)]
    return (images, rng.normal(size=(n, Z))), images


TRAIN = dict(loss=(loss_function, jax_loss_function), optimizer="adam", lr=1e-3)
