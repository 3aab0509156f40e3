"""Losses for the harness, each written twice (torch, JAX) with torch's semantics, or a
caller's own (torch loss, JAX loss) pair.

- mse, bce (torch's -100 clamp of each log term and its backward), bce_with_logits: means over every entry.
- cross_entropy and nll_loss take torch's layout: classes on axis 1, any trailing dims,
  (N, C, d1, ...) outputs against (N, d1, ...) integer targets (a GPT's (N, V, T)
  logits). optax wants classes on the last axis: the JAX side moves axis 1 there.
  Options, torch's defaults: ignore_index -100 (such targets add 0 and are not
  counted in the mean), label_smoothing 0 (cross_entropy only). With smoothing eps,
  torch computes (1 - eps) nll_mean + (eps / C) sum(-log p over classes, kept
  targets) / kept, in that order (aten's cross_entropy_loss_label_smoothing); the JAX
  side follows that order. Every target must be a class in 0..C-1 or ignore_index.
- (torch_fn, jax_fn): each takes (model output, target) and returns a scalar.
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxport import losses
from parity_tests.engine.sides.port_objectives import PortInputError

CLASS_AXIS = ("cross_entropy", "nll_loss")
OPTIONS = {"cross_entropy": {"ignore_index": -100, "label_smoothing": 0.0}, "nll_loss": {"ignore_index": -100}}


@dataclass(frozen=True)
class Objective:
    """One loss on both sides: torch(out, y) and jax(out, y) return the scalar."""
    label: str                         # for the report ("cross_entropy label_smoothing 0.1")
    torch: object
    jax: object
    integer: bool                      # integer class targets (cross_entropy, nll_loss)
    name: str                          # the loss's name, "custom" for a caller's pair
    options: dict


def pairwise_sum(values):
    """The sum of every entry by halves (pairwise summation). torch sums a loss's N x T
    terms to within ~1.6 float32 ulps of the exact mean; XLA's CPU sum was 4.5 ulps
    off (40 random (N, C, T) draws), past the float32 bound's 4-ulp term where the
    members' spread is ~0: a correct nll_loss port used 0.99 of rung 4's loss bound.
    Pairwise: at most 1.4 ulps. Its gradient is the sum's, ones."""
    v = jnp.ravel(values)
    size = 1 << max(v.size - 1, 0).bit_length()
    v = jnp.pad(v, (0, size - v.size))
    while v.size > 1:
        v = v[: v.size // 2] + v[v.size // 2:]
    return v[0]


def _class_axis_loss(log_probs: bool, ignore_index: int, label_smoothing: float):
    """torch's cross_entropy / nll_loss (reduction mean, no class weights) in JAX."""
    def loss(out, y):
        scores = jnp.moveaxis(out, 1, -1)                      # (N, d..., C): optax's layout
        kept = y != ignore_index
        safe = jnp.where(kept, y, 0)
        if log_probs:
            each = -jnp.take_along_axis(scores, safe[..., None], axis=-1)[..., 0]
        else:                          # optax's logsumexp - logit (the house's loss before trailing dims)
            each = optax.softmax_cross_entropy_with_integer_labels(scores, safe)
        count = jnp.sum(kept).astype(scores.dtype)
        nll = pairwise_sum(jnp.where(kept, each, 0)) / count
        if not label_smoothing:
            return nll
        logp = scores if log_probs else jax.nn.log_softmax(scores, axis=-1)
        smooth = pairwise_sum(jnp.where(kept, -jnp.sum(logp, axis=-1), 0)) / count
        return (1 - label_smoothing) * nll + smooth * (label_smoothing / scores.shape[-1])
    return loss


def _torch_fn(name: str, options: dict):
    import torch.nn.functional as F  # noqa: PLC0415
    fn = {"mse": F.mse_loss, "bce": F.binary_cross_entropy, "bce_with_logits": F.binary_cross_entropy_with_logits,
          "cross_entropy": F.cross_entropy, "nll_loss": F.nll_loss}[name]
    return lambda out, y: fn(out, y, **options)


# jaxport's own losses: bce's backward is torch's (p - y) / max(p (1 - p), 1e-12), not
# the clamped logs' derivative, which is NaN or 0 where a sigmoid saturates to 0 or 1
# (a DCGAN discriminator at lr 0.05: NaN gradients in float32, 12% off in float64).
JAX_PLAIN = {"mse": losses.mse, "bce": losses.bce, "bce_with_logits": losses.bce_with_logits}
LOSSES = (*JAX_PLAIN, *CLASS_AXIS)


def objective(loss, options: dict | None = None) -> Objective:
    """The loss by name (with torch's keyword options) or a (torch_fn, jax_fn) pair."""
    options = dict(options or {})
    if isinstance(loss, tuple) and len(loss) == 2 and all(callable(f) for f in loss):
        if options:
            raise PortInputError("a (torch, JAX) loss pair takes no loss_options (put them in your functions)")
        return Objective("custom (torch, JAX) pair", loss[0], loss[1], False, "custom", {})
    if not isinstance(loss, str) or loss not in LOSSES:
        raise PortInputError(f"unknown loss {loss!r} (use one of {', '.join(LOSSES)}, or a (torch_fn, jax_fn) pair)")
    allowed = OPTIONS.get(loss, {})
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise PortInputError(f"loss {loss} takes no option {', '.join(unknown)}"
                             + (f" (it takes {', '.join(allowed)})" if allowed else ""))
    if loss not in CLASS_AXIS:
        return Objective(loss, _torch_fn(loss, {}), JAX_PLAIN[loss], False, loss, {})
    full = {**allowed, **options}
    eps, ignore = full.get("label_smoothing", 0.0), full["ignore_index"]
    if not isinstance(ignore, (int, np.integer)) or isinstance(ignore, bool):
        raise PortInputError(f"ignore_index must be an integer, not {ignore!r}")
    if not 0.0 <= float(eps) <= 1.0:
        raise PortInputError(f"label_smoothing must lie in [0, 1], not {eps!r}")
    label = loss + "".join(f" {k} {v:g}" for k, v in options.items())
    torch_options = {"ignore_index": int(ignore), **({"label_smoothing": float(eps)} if loss == "cross_entropy" else {})}
    return Objective(label, _torch_fn(loss, torch_options),
                     _class_axis_loss(loss == "nll_loss", int(ignore), float(eps)), True, loss, torch_options)


def check_targets(obj: Objective, out_shape: tuple, y: np.ndarray) -> None:
    """A class-axis loss's shapes and labels: (N, C, d1, ...) outputs against
    (N, d1, ...) targets, each a class 0..C-1 or ignore_index (torch raises an
    IndexError on others; a JAX gather would clamp or fill silently)."""
    if obj.name not in CLASS_AXIS:
        return
    if len(out_shape) != y.ndim + 1 or tuple(out_shape[2:]) != y.shape[1:]:
        raise PortInputError(f"{obj.name} needs (N, classes) outputs for (N,) labels, or (N, classes, d1, ...) "
                             f"for (N, d1, ...): output per row {tuple(out_shape[1:])}, y's {y.shape[1:]}")
    kept = y[y != obj.options["ignore_index"]]
    if kept.size and (kept.min() < 0 or kept.max() >= out_shape[1]):
        raise PortInputError(f"class labels in y run {kept.min()}..{kept.max()}, the model has {out_shape[1]} "
                             f"classes (ignore_index {obj.options['ignore_index']})")
    if not kept.size:
        raise PortInputError(f"every target in y is ignore_index {obj.options['ignore_index']}: the mean is 0/0")
