"""Losses with torch's semantics. Each takes an optional per-sample `weight` (N, 1): the
compiled loop pads the last partial batch to a fixed shape and gives the padding
weight 0, so that the mean runs over the real samples only, as in torch."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

# torch.nn.BCELoss clamps each log at -100 so that p = 0 or 1 gives a finite loss.
LOG_CLAMP = -100.0
# ... and its backward divides by max(p (1 - p), 1e-12) instead of differentiating
# the clamped logs, which would give 0 where torch gives a huge finite gradient.
# torch's constant is a float32 1e-12 even in float64 (9.99999996e-13); matching it
# keeps saturated gradients equal to 1e-9 relative instead of 4e-9.
BCE_GRAD_EPS = float(np.float32(1e-12))


def _mean(values, weight):
    if weight is None:
        return jnp.mean(values)
    return jnp.sum(values * weight) / jnp.sum(weight)


def mse(pred, target, weight=None):
    """nn.MSELoss(): mean of the squared error."""
    return _mean((pred - target) ** 2, weight)


@jax.custom_vjp
def _bce_terms(p, y):
    return -(y * jnp.maximum(jnp.log(p), LOG_CLAMP) + (1 - y) * jnp.maximum(jnp.log1p(-p), LOG_CLAMP))


def _bce_fwd(p, y):
    return _bce_terms(p, y), (p, y)


def _bce_bwd(residual, g):
    p, y = residual
    return g * (p - y) / jnp.maximum((1 - p) * p, BCE_GRAD_EPS), None


_bce_terms.defvjp(_bce_fwd, _bce_bwd)


def bce(prob, target, weight=None):
    """nn.BCELoss(): probabilities in, each log clamped at -100, mean over samples."""
    return _mean(_bce_terms(prob, target), weight)


def bce_with_logits(logits, target, weight=None):
    """The optax way: logits in, log-sigmoid inside (no clamp needed), mean here
    because optax.sigmoid_binary_cross_entropy does not reduce."""
    return _mean(optax.sigmoid_binary_cross_entropy(logits, target), weight)


def cross_entropy(logits, labels, weight=None):
    """nn.CrossEntropyLoss(): logits (N, C) and integer class indices (N,), mean over
    samples; optax's per-sample loss does not reduce."""
    per_sample = optax.softmax_cross_entropy_with_integer_labels(logits, labels)   # (N,)
    return _mean(per_sample, None if weight is None else weight.reshape(per_sample.shape))
