"""torch.optim's SGD, RMSprop, Adagrad, Adadelta (and Adam under a schedule) as optax
GradientTransformations with torch's order of operations (torch 2.x's single-tensor
code, which runs on CPU), and torch's learning-rate schedules as per-step tables.

optax's own versions are the same algorithms with other conventions: optax.rmsprop
adds eps inside the square root (torch: sqrt(v) + eps) and decays by 0.9 (torch:
0.99), optax.adagrad starts its sum at 0.1 with eps 1e-7 (torch: 0 and 1e-10),
optax.sgd has no coupled weight decay.
These follow torch line by line so that one float64 step agrees to roundoff.

The learning rate of every step comes from a table computed once in Python double, as
torch's schedulers compute it (and as jaxport.optim.torch_adam computes its bias
corrections), indexed by the step count and rounded to the parameters' dtype: torch
applies its Python-float lr as a scalar of the tensor's dtype. The state is
TorchState(count, slots), slots named as torch's state_dict names them
("momentum_buffer", "square_avg", "sum", "acc_delta"), so a torch optimizer's state
converts to optax's key by key (port_nnx.NnxRunner.opt_state).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


class TorchState(NamedTuple):
    count: jax.Array                   # steps taken (torch's "step"), indexes the lr table
    slots: dict                        # torch's state name -> a tree like the parameters


def _scalar(table: np.ndarray, count, dtype):
    """table[count] (the last entry past its end) as a scalar of `dtype`."""
    return jnp.asarray(table.astype(dtype))[jnp.minimum(count, len(table) - 1)]


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


def torch_sgd(lrs, momentum=0.0, nesterov=False, weight_decay=0.0) -> optax.GradientTransformation:
    """torch.optim.SGD, dampening 0: g += wd p; buf = m buf + g (the first buf is g: from
    a zero buffer m 0 + g is g exactly); nesterov g + m buf, else buf; p -= lr g."""
    def leaf(g, p, s, lr):
        if weight_decay:
            g = g + _c(weight_decay, g) * p                    # grad.add(param, alpha=wd)
        out = {}
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
        if weight_decay:
            g = g + _c(weight_decay, g) * p
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
        if weight_decay:
            g = g + _c(weight_decay, g) * p
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
        if weight_decay:
            g = g + _c(weight_decay, g) * p
        v = s["square_avg"] * _c(rho, g) + _c(1 - rho, g) * g * g
        std = jnp.sqrt(v + _c(eps, g))
        delta = jnp.sqrt(s["acc_delta"] + _c(eps, g)) / std * g         # delta.div_(std).mul_(grad)
        u = s["acc_delta"] * _c(rho, g) + _c(1 - rho, g) * delta * delta
        return -lr * delta, {"square_avg": v, "acc_delta": u}
    return torch_transformation(lrs, {"square_avg": 0.0, "acc_delta": 0.0}, leaf)


def torch_adam_scheduled(lrs, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0) -> optax.GradientTransformation:
    """torch.optim.Adam (or AdamW, weight_decay decoupled) under a schedule: as
    jaxport.optim.torch_adam, with step t's lr / (1 - b1^t) from lrs[t - 1], in double.
    The state is optax's ScaleByAdamState, converted as Adam's."""
    lrs = np.atleast_1d(np.asarray(lrs, np.float64))
    # past the schedule's table the last lr holds; the bias corrections run on until
    # both are exactly 1 in double (b^t < 2^-60), as in jaxport.optim
    slowest = max(b1, b2)
    converged = min(2 ** 20, int(math.ceil(60 * math.log(2) / -math.log(slowest))) + 2) if 0 < slowest < 1 else 2
    lrs = np.concatenate([lrs, np.full(max(converged - len(lrs), 0), lrs[-1])])
    step_size = np.array([lrs[s - 1] / (1 - b1 ** s) if s else lrs[0] for s in range(len(lrs) + 1)])
    bc2_sqrt = np.array([(1 - b2 ** s) ** 0.5 if s else 1.0 for s in range(len(lrs) + 1)])   # torch: ** 0.5
    decay = lrs * weight_decay

    def init(params):
        zeros = lambda p: jnp.zeros_like(p)     # noqa: E731
        return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=jax.tree.map(zeros, params),
                                      nu=jax.tree.map(zeros, params))

    def update(grads, state, params=None):
        count = optax.safe_increment(state.count)
        mu = jax.tree.map(lambda m, g: m + _c(1 - b1, g) * (g - m), state.mu, grads)
        nu = jax.tree.map(lambda v, g: v * _c(b2, g) + _c(1 - b2, g) * g * g, state.nu, grads)

        def step(m, v, p):
            a, c = _scalar(step_size, count, m.dtype), _scalar(bc2_sqrt, count, m.dtype)
            u = (-a * m) / (jnp.sqrt(v) / c + _c(eps, m))
            # torch: p.mul_(1 - lr wd) before the step; here -lr wd p added to it
            return u - _scalar(decay, state.count, m.dtype) * p if weight_decay else u
        return jax.tree.map(step, mu, nu, params), optax.ScaleByAdamState(count=count, mu=mu, nu=nu)
    return optax.GradientTransformation(init, update)


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
