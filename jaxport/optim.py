"""Adam as torch computes it, as an Optax GradientTransformation.

`optax.adam` is the same algorithm, but it divides the moments by the bias corrections
`1 - b**count`, which it computes in JAX's default float dtype: float32 unless
jax_enable_x64 is on. `1 - float32(0.999)` is 0.00099998713, 1.3e-5 relative off, so
without x64 one optax step from torch's state lands up to ~1e5 ulps away from torch's
(and jaxport's float32 numbers would change with a global flag). torch computes the
bias corrections in Python double and then applies them as float32 scalars:

    m = m.lerp(g, 1 - b1)                     # m + (1 - b1) (g - m)
    v = v * b2 + (1 - b2) g g
    p = p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)

`torch_adam` follows that order, with the two scalars `lr / (1 - b1^t)` and
`sqrt(1 - b2^t)` taken from a table computed once in Python double, like torch, and
rounded to the parameters' dtype: its results no longer depend on jax_enable_x64.
The state is optax's own ScaleByAdamState (count, mu, nu), so everything that reads
optax.adam's state (the optimizer state in the exchange format) reads this one.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

# The table runs until both corrections are exactly 1 in double (b**t < 2**-60), capped
# for betas so close to 1 that it would be large; past the cap the scalars are computed
# in the graph (in the parameters' dtype), which only a run of > 2**20 steps reaches.
TABLE_CAP = 2 ** 20


def bias_correction_table(lr: float, b1: float, b2: float) -> tuple[np.ndarray, np.ndarray]:
    """(lr / (1 - b1**t), sqrt(1 - b2**t)) for t = 0 .. T-1, in Python double as torch
    computes them (entry 0 is never used: the first step is t = 1)."""
    slowest = max(b1, b2)
    length = TABLE_CAP if slowest >= 1.0 else min(
        TABLE_CAP, int(math.ceil(60 * math.log(2) / -math.log(slowest))) + 2) if slowest > 0 else 2
    t = range(length)
    step_size = [lr / (1 - b1 ** s) if s else lr for s in t]
    bc2_sqrt = [(1 - b2 ** s) ** 0.5 if s else 1.0 for s in t]
    return np.array(step_size), np.array(bc2_sqrt)


def torch_adam(lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
               ) -> optax.GradientTransformation:
    """torch.optim.Adam (no weight decay, no amsgrad) with torch's arithmetic."""
    step_size, bc2_sqrt = bias_correction_table(lr, b1, b2)
    length = len(step_size)

    def init(params):
        zeros = lambda p: jnp.zeros_like(p)     # noqa: E731
        return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32),
                                      mu=jax.tree.map(zeros, params), nu=jax.tree.map(zeros, params))

    def scalars(count, dtype):
        """The step's two scalars in `dtype`, from the double table."""
        index = jnp.minimum(count, length - 1)
        a, c = jnp.asarray(step_size.astype(dtype))[index], jnp.asarray(bc2_sqrt.astype(dtype))[index]
        if length < TABLE_CAP:          # the table reaches exact 1.0: the last entry holds
            return a, c
        t = count.astype(dtype)         # past the cap: computed in the dtype (> 2**20 steps)
        late = (lr / -jnp.expm1(t * math.log(b1)), jnp.sqrt(-jnp.expm1(t * math.log(b2))))
        return jnp.where(count < length, a, late[0]), jnp.where(count < length, c, late[1])

    def update(grads, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        # torch: exp_avg.lerp_(grad, 1 - b1), exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        mu = jax.tree.map(lambda m, g: m + jnp.asarray(1 - b1, g.dtype) * (g - m), state.mu, grads)
        nu = jax.tree.map(lambda v, g: v * jnp.asarray(b2, g.dtype) + jnp.asarray(1 - b2, g.dtype) * g * g,
                          state.nu, grads)

        def step(m, v):
            a, c = scalars(count, m.dtype)
            denom = jnp.sqrt(v) / c + jnp.asarray(eps, m.dtype)
            return (-a * m) / denom              # torch: p.addcdiv_(m, denom, value=-a)
        updates = jax.tree.map(step, mu, nu)
        return updates, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


def make_optimizer(config) -> optax.GradientTransformation:
    """The optax twin of torchref.optim.make_optimizer for a specs.TrainConfig."""
    if config.optimizer == "sgd":
        # optax.sgd's trace is torch's momentum buffer with dampening 0.
        return optax.sgd(config.lr, momentum=config.momentum or None)
    if config.optimizer == "adam":
        # optax.adam is the same algorithm (eps outside the root), but its bias
        # corrections are computed in JAX's default float: see torch_adam above.
        b1, b2 = config.betas
        return torch_adam(config.lr, b1=b1, b2=b2, eps=config.eps)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")
