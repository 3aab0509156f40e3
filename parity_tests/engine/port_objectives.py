"""Losses and optimizers by name, each written twice (torch, JAX/optax) with the same
semantics, for the harness (parity_tests/harness.py).

Defaults differ between the libraries and are pinned here to torch's:
- BCE: torch clamps each log term at -100; written the same way on the JAX side.
- cross_entropy: integer class labels, mean over the batch (optax does not reduce).
- AdamW: torch's weight decay defaults to 1e-2, optax.adamw's to 1e-4; both decoupled.
  torch decays the parameter before Adam's update, p (1 - lr wd) - step; the optax side
  here is jaxport.optim.torch_adam (torch's bias-correction arithmetic) plus the decay
  -lr wd p added to its update, so the two differ by the rounding of one addition.
- SGD: momentum 0.9 unless given; optax.sgd's trace (g + m t, from t = 0) is torch's
  buffer (m b + g, first b = g) with dampening 0.
An explicit (torch factory, optax transformation) pair runs as given; its optimizer
state is not converted between the sides (the teacher-forced rung then feeds only the
parameters, see port_rungs.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax

from jaxport.optim import torch_adam


class PortInputError(ValueError):
    """Bad input to the harness (unknown loss, shapes that do not fit): exit status 2."""


# ---- losses --------------------------------------------------------------------------
def _torch_losses():
    import torch.nn.functional as F  # noqa: PLC0415
    return {"mse": F.mse_loss, "bce": F.binary_cross_entropy,
            "bce_with_logits": F.binary_cross_entropy_with_logits,
            "cross_entropy": F.cross_entropy}


def _bce(p, y):
    # torch's nn.BCELoss: each log term clamped at -100, then the mean
    log_p, log_q = jnp.maximum(jnp.log(p), -100.0), jnp.maximum(jnp.log1p(-p), -100.0)
    return -jnp.mean(y * log_p + (1 - y) * log_q)


JAX_LOSSES = {
    "mse": lambda out, y: jnp.mean((out - y) ** 2),
    "bce": _bce,
    "bce_with_logits": lambda out, y: jnp.mean(optax.sigmoid_binary_cross_entropy(out, y)),
    "cross_entropy": lambda out, y: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, y)),
}
LOSSES = tuple(JAX_LOSSES)


def torch_loss(name: str):
    if name not in JAX_LOSSES:
        raise PortInputError(f"unknown loss {name!r} (use one of {', '.join(LOSSES)})")
    return _torch_losses()[name]


def integer_targets(loss: str) -> bool:
    return loss == "cross_entropy"


# ---- optimizers ----------------------------------------------------------------------
def _torch_decoupled_adam(lr: float, weight_decay: float) -> optax.GradientTransformation:
    """torch.optim.AdamW: torch_adam's update minus lr wd p (p before the update), with
    torch_adam's own state (so the state converts like Adam's)."""
    adam = torch_adam(lr)

    def update(grads, state, params):
        updates, state = adam.update(grads, state)
        decay = jax.tree.map(lambda u, p: u - jnp.asarray(lr * weight_decay, p.dtype) * p, updates, params)
        return decay, state
    return optax.GradientTransformation(adam.init, update)


@dataclass(frozen=True)
class OptimizerPair:
    """One optimizer on both sides: `torch(params)` builds torch's, `optax` is the
    transformation; `kind` says how torch's state maps onto optax's (None: it does not)."""
    label: str
    torch: object
    optax: optax.GradientTransformation
    kind: str | None


def optimizer_pair(optimizer, lr: float, momentum: float = 0.9, weight_decay: float = 1e-2) -> OptimizerPair:
    """"sgd" (with momentum), "adam", "adamw" (torch's default decay 1e-2 on both sides),
    or an explicit (torch optimizer factory, optax transformation) pair."""
    import torch  # noqa: PLC0415
    if isinstance(optimizer, tuple) and len(optimizer) == 2:
        return OptimizerPair("explicit pair", optimizer[0], optimizer[1], None)
    if optimizer == "sgd":
        return OptimizerPair(f"SGD lr {lr:g} momentum {momentum:g}",
                             lambda ps: torch.optim.SGD(ps, lr=lr, momentum=momentum),
                             optax.sgd(lr, momentum=momentum or None), "sgd" if momentum else "plain")
    if optimizer == "adam":
        return OptimizerPair(f"Adam lr {lr:g}", lambda ps: torch.optim.Adam(ps, lr=lr), torch_adam(lr), "adam")
    if optimizer == "adamw":
        return OptimizerPair(f"AdamW lr {lr:g} weight decay {weight_decay:g} (decoupled)",
                             lambda ps: torch.optim.AdamW(ps, lr=lr, weight_decay=weight_decay),
                             _torch_decoupled_adam(lr, weight_decay), "adam")
    raise PortInputError(f"unknown optimizer {optimizer!r} (use sgd, adam, adamw or a (torch, optax) pair)")
