"""torch.optim's optimizers as Optax GradientTransformations, with torch's arithmetic:
Adam and AdamW, SGD, RMSprop, Adagrad, Adadelta, and torch's learning-rate schedules as
per-step tables. jaxport's examples use Adam and optax.sgd (make_optimizer); check_port
(parity_tests) builds the others, and a port of a torch training loop can use them.

Adam as torch computes it.

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

The others: optax's versions are the same algorithms with other conventions
(optax.rmsprop adds eps inside the square root, torch outside, and decays by 0.9,
torch 0.99; optax.adagrad starts its sum at 0.1 with eps 1e-7, torch at 0 with 1e-10;
optax.sgd has no coupled weight decay). These follow torch 2.x's single-tensor code
line by line, so that one float64 step agrees to roundoff. Every step's learning rate
comes from a table computed once in Python double, as torch's schedulers compute it,
indexed by the step count and rounded to the parameters' dtype (torch applies its
Python-float lr as a scalar of the tensor's dtype). Their state is TorchState(count,
slots), slots named as torch's state names them ("momentum_buffer", "square_avg",
"sum", "acc_delta"), so a torch optimizer's state converts to optax's key by key.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

# The table runs until both corrections are exactly 1 in double (b**t < 2**-60), capped
# for betas so close to 1 that it would be large; past the cap the scalars are computed
# in the graph (in the parameters' dtype), which only a run of > 2**20 steps reaches.
TABLE_CAP = 2 ** 20


def bias_correction_table(lr, b1: float, b2: float) -> tuple[np.ndarray, np.ndarray]:
    """(lr_t / (1 - b1**t), sqrt(1 - b2**t)) for t = 0 .. T-1, in Python double as torch
    computes them (entry 0 is never used: the first step is t = 1). lr: a float, or
    one per step (a schedule's table, lr_t = lr[t - 1], the last one holding after it)."""
    lrs = np.atleast_1d(np.asarray(lr, np.float64))
    slowest = max(b1, b2)
    length = TABLE_CAP if slowest >= 1.0 else min(
        TABLE_CAP, int(math.ceil(60 * math.log(2) / -math.log(slowest))) + 2) if slowest > 0 else 2
    length = max(length, len(lrs) + 1)
    lr_at = lambda s: lrs[min(s - 1, len(lrs) - 1)]     # noqa: E731
    step_size = [lr_at(s) / (1 - b1 ** s) if s else lrs[0] for s in range(length)]
    bc2_sqrt = [(1 - b2 ** s) ** 0.5 if s else 1.0 for s in range(length)]
    return np.array(step_size), np.array(bc2_sqrt)


def _scalar(table: np.ndarray, count, dtype):
    """table[count] (the last entry past its end) as a scalar of `dtype`."""
    return jnp.asarray(table.astype(dtype))[jnp.minimum(count, len(table) - 1)]


def torch_adam(lr, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0
               ) -> optax.GradientTransformation:
    """torch.optim.Adam (no amsgrad), or AdamW with weight_decay (decoupled: torch decays
    p by (1 - lr wd) before the step, this adds -lr wd p to the step; the two differ by
    the rounding of one addition), with torch's arithmetic. lr: a float or a schedule's
    per-step table."""
    step_size, bc2_sqrt = bias_correction_table(lr, b1, b2)
    length, last_lr = len(step_size), float(np.atleast_1d(lr)[-1])
    decay = np.atleast_1d(np.asarray(lr, np.float64)) * weight_decay

    def init(params):
        zeros = lambda p: jnp.zeros_like(p)     # noqa: E731
        return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32),
                                      mu=jax.tree.map(zeros, params), nu=jax.tree.map(zeros, params))

    def scalars(count, dtype):
        """The step's two scalars in `dtype`, from the double table."""
        a, c = _scalar(step_size, count, dtype), _scalar(bc2_sqrt, count, dtype)
        if length < TABLE_CAP:          # the table reaches exact 1.0: the last entry holds
            return a, c
        t = count.astype(dtype)         # past the cap: computed in the dtype (> 2**20 steps)
        late = (last_lr / -jnp.expm1(t * math.log(b1)), jnp.sqrt(-jnp.expm1(t * math.log(b2))))
        return jnp.where(count < length, a, late[0]), jnp.where(count < length, c, late[1])

    def update(grads, state, params=None):
        count = optax.safe_increment(state.count)
        # torch: exp_avg.lerp_(grad, 1 - b1), exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        mu = jax.tree.map(lambda m, g: m + jnp.asarray(1 - b1, g.dtype) * (g - m), state.mu, grads)
        nu = jax.tree.map(lambda v, g: v * jnp.asarray(b2, g.dtype) + jnp.asarray(1 - b2, g.dtype) * g * g,
                          state.nu, grads)

        def step(m, v, p=None):
            a, c = scalars(count, m.dtype)
            denom = jnp.sqrt(v) / c + jnp.asarray(eps, m.dtype)
            u = (-a * m) / denom                 # torch: p.addcdiv_(m, denom, value=-a)
            return u - _scalar(decay, state.count, m.dtype) * p if weight_decay else u
        updates = jax.tree.map(step, mu, nu, params) if weight_decay else jax.tree.map(step, mu, nu)
        return updates, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


class TorchState(NamedTuple):
    count: jax.Array                   # steps taken (torch's "step"), indexes the lr table
    slots: dict                        # torch's state name -> a tree like the parameters


def torch_transformation(lrs, slots: dict, leaf_step) -> optax.GradientTransformation:
    """A torch optimizer: `slots` {name: initial value}, `leaf_step(g, p, slots, lr)`
    -> (update, new slots) per parameter, lr the step's scalar from `lrs` (Python
    doubles, one per step; the last one holds after the table)."""
    lrs = np.atleast_1d(np.asarray(lrs, np.float64))

    def init(params):
        return TorchState(jnp.zeros([], jnp.int32),
                          {k: jax.tree.map(lambda p, v=v: jnp.full_like(p, v), params) for k, v in slots.items()})

    def update(grads, state, params=None):
        g_leaves, treedef = jax.tree.flatten(grads)
        p_leaves = jax.tree.leaves(params)
        s_leaves = {k: jax.tree.leaves(v) for k, v in state.slots.items()}
        updates, new = [], {k: [] for k in slots}
        for i, (g, p) in enumerate(zip(g_leaves, p_leaves)):
            u, s = leaf_step(g, p, {k: v[i] for k, v in s_leaves.items()}, _scalar(lrs, state.count, g.dtype))
            updates.append(u)
            for k in slots:
                new[k].append(s[k])
        return (jax.tree.unflatten(treedef, updates),
                TorchState(optax.safe_increment(state.count), {k: jax.tree.unflatten(treedef, v) for k, v in new.items()}))
    return optax.GradientTransformation(init, update)


def _c(value, like):
    return jnp.asarray(value, like.dtype)


def _decayed(g, p, weight_decay):
    return g + _c(weight_decay, g) * p if weight_decay else g      # grad.add(param, alpha=wd)


def torch_sgd(lrs, momentum=0.0, nesterov=False, weight_decay=0.0) -> optax.GradientTransformation:
    """torch.optim.SGD, dampening 0: g += wd p; buf = m buf + g (the first buf is g: from
    a zero buffer m 0 + g is g exactly); nesterov g + m buf, else buf; p -= lr g."""
    def leaf(g, p, s, lr):
        g, out = _decayed(g, p, weight_decay), {}
        if momentum:
            buf = s["momentum_buffer"] * _c(momentum, g) + g   # buf.mul_(m).add_(g)
            out["momentum_buffer"] = buf
            g = g + _c(momentum, g) * buf if nesterov else buf
        return -lr * g, out                                    # param.add_(g, alpha=-lr)
    return torch_transformation(lrs, {"momentum_buffer": 0.0} if momentum else {}, leaf)


def torch_rmsprop(lrs, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0) -> optax.GradientTransformation:
    """torch.optim.RMSprop (not centered): v = alpha v + (1 - alpha) g g; eps outside
    the root, p -= lr g / (sqrt(v) + eps), or through a momentum buffer."""
    def leaf(g, p, s, lr):
        g = _decayed(g, p, weight_decay)
        v = s["square_avg"] * _c(alpha, g) + _c(1 - alpha, g) * g * g   # mul_(alpha).addcmul_(g, g, 1 - alpha)
        avg = jnp.sqrt(v) + _c(eps, g)
        out = {"square_avg": v}
        if momentum:
            buf = s["momentum_buffer"] * _c(momentum, g) + g / avg      # buf.mul_(m).addcdiv_(g, avg)
            out["momentum_buffer"] = buf
            return -lr * buf, out
        return (-lr * g) / avg, out                                      # p.addcdiv_(g, avg, value=-lr)
    return torch_transformation(lrs, {"square_avg": 0.0, **({"momentum_buffer": 0.0} if momentum else {})}, leaf)


def torch_adagrad(lrs, eps=1e-10, weight_decay=0.0, initial_accumulator_value=0.0) -> optax.GradientTransformation:
    """torch.optim.Adagrad: sum += g g; p -= clr g / (sqrt(sum) + eps). lr_decay's
    clr = lr / (1 + (t - 1) lr_decay) belongs in `lrs` (adagrad_lrs)."""
    def leaf(g, p, s, lr):
        g = _decayed(g, p, weight_decay)
        total = s["sum"] + g * g                                         # addcmul_(g, g, value=1)
        return (-lr * g) / (jnp.sqrt(total) + _c(eps, g)), {"sum": total}
    return torch_transformation(lrs, {"sum": initial_accumulator_value}, leaf)


def adagrad_lrs(lrs, lr_decay: float, steps: int) -> np.ndarray:
    """Adagrad's clr per step in Python double, torch's formula on torch's lr."""
    lrs = np.atleast_1d(np.asarray(lrs, np.float64))
    if not lr_decay:
        return lrs
    return np.array([float(lrs[min(t, len(lrs) - 1)]) / (1 + t * lr_decay) for t in range(max(steps, len(lrs)))])


def torch_adadelta(lrs, rho=0.9, eps=1e-6, weight_decay=0.0) -> optax.GradientTransformation:
    """torch.optim.Adadelta: v = rho v + (1 - rho) g g; delta = sqrt(u + eps) /
    sqrt(v + eps) g; u = rho u + (1 - rho) delta delta; p -= lr delta."""
    def leaf(g, p, s, lr):
        g = _decayed(g, p, weight_decay)
        v = s["square_avg"] * _c(rho, g) + _c(1 - rho, g) * g * g
        std = jnp.sqrt(v + _c(eps, g))
        delta = jnp.sqrt(s["acc_delta"] + _c(eps, g)) / std * g         # delta.div_(std).mul_(grad)
        u = s["acc_delta"] * _c(rho, g) + _c(1 - rho, g) * delta * delta
        return -lr * delta, {"square_avg": v, "acc_delta": u}
    return torch_transformation(lrs, {"square_avg": 0.0, "acc_delta": 0.0}, leaf)


# ---- schedules: torch's recurrences (get_lr, the chainable form) in Python double ----
def step_lr_table(lr: float, steps: int, step_size: int, gamma: float) -> np.ndarray:
    """StepLR: the lr of steps 0 .. steps-1, scheduler stepped after every step."""
    out, current = [], lr
    for t in range(steps):
        if t and t % step_size == 0:
            current = current * gamma
        out.append(current)
    return np.array(out)


def cosine_lr_table(lr: float, steps: int, T_max: int, eta_min: float = 0.0) -> np.ndarray:  # noqa: N803 (torch's name)
    """CosineAnnealingLR's recurrence, torch's get_lr branch by branch."""
    out, current = [], lr
    for t in range(steps):
        if t == 0:
            pass
        elif (t - 1 - T_max) % (2 * T_max) == 0:
            current = current + (lr - eta_min) * (1 - math.cos(math.pi / T_max)) / 2
        else:
            current = ((1 + math.cos(math.pi * t / T_max)) / (1 + math.cos(math.pi * (t - 1) / T_max))
                       * (current - eta_min) + eta_min)
        out.append(current)
    return np.array(out)


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
