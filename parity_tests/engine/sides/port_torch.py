"""The reference side: torch's steps from any state given as arrays, and torch's own
float32 noise for one step (bounds/step_noise.py), for any torch.nn.Module: a user's
(check_port) or an example's torchref model (example_sides.py).

The noise: MEMBERS float64 torch steps from the state with every parameter, running
statistic, optimizer moment and float input moved by one float32 ulp in a random
direction, and float32 steps with the batch's rows in other orders. The members run
one after another: a module may hold BatchNorm buffers, which vmap cannot update (the
tutorial's examples had vmapped members with a per-sample summand term; on these tiny
models the members cost milliseconds, and the row-order members measure the batch
sums' rounding itself, so one measurement serves every model).
"""
from __future__ import annotations

import copy
import warnings

import numpy as np
import torch

from parity_tests.engine.sides.port_models import torch_arrays
from parity_tests.engine.sides.pytrees import Inputs, call, map_leaves, view
from parity_tests.engine.bounds.step_noise import MEMBERS, moved_one_ulp

MOMENT_KEYS = ("exp_avg", "exp_avg_sq", "momentum_buffer", "square_avg", "sum", "acc_delta")
NON_NEGATIVE = ("exp_avg_sq", "square_avg", "sum", "acc_delta")   # sums of squares: moved, they stay >= 0


class TorchOptimizer:
    """A torch optimizer and its scheduler (None without one), stepped together (the
    scheduler after every optimizer step); `steps` counts the steps taken, the
    schedule's position (torch's SGD keeps no step count of its own)."""

    def __init__(self, built, steps: int = 0):
        self.opt, self.scheduler = built if isinstance(built, tuple) else (built, None)
        self.state, self.steps = self.opt.state, steps

    def zero_grad(self):
        self.opt.zero_grad()

    def step(self):
        self.opt.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.steps += 1


def as_torch(a, dtype: str, integer: bool = False, device=None):
    """An array as a tensor of the run's dtype (integers as int64) on `device` (None:
    the CPU); several inputs each."""
    if isinstance(a, Inputs):
        return a.map(lambda v: as_torch(v, dtype, integer, device))
    a = np.asarray(a)
    if integer or not np.issubdtype(a.dtype, np.floating):
        return torch.as_tensor(a.astype(np.int64), device=device)
    return torch.as_tensor(a.astype(dtype), device=device)


class TorchSide:
    """Models, optimizers and steps of the reference, from arrays: a port's torch model
    (harness.py) or an example's torchref model (example_sides.py). output: the leaf of
    the output that is compared (pytrees.view); dropout: the hash-mask dropout is on."""

    def __init__(self, torch_model, dtype: str, loss_fn, optimizer_factory, integer_targets: bool, output=None,
                 dropout: bool = False):
        self.torch_model, self.dtype, self.output, self.dropout = torch_model, dtype, output, dropout
        self.loss_fn, self.factory, self.integer = loss_fn, optimizer_factory, integer_targets
        self.device = next(torch_model.parameters()).device      # an example's GPU cell: its model's device

    def arrays(self) -> dict:
        """The model's own parameters and buffers (the shared start)."""
        return torch_arrays(self.torch_model)

    def model(self, arrays: dict | None = None, dtype: str | None = None):
        """A fresh copy of the port's torch model (its weights, or `arrays`)."""
        model = copy.deepcopy(self.torch_model).to(getattr(torch, dtype or self.dtype))
        if arrays is not None:
            with torch.no_grad():
                for name, t in {**dict(model.named_parameters()), **dict(model.named_buffers())}.items():
                    if name in arrays:
                        t.copy_(torch.as_tensor(np.asarray(arrays[name])))
        return model

    def optimizer(self, model, moments: dict | None = None, count: int = 0) -> TorchOptimizer:
        """A fresh optimizer at step `count`: torch's moments written into its state, its
        scheduler stepped `count` times (torch's own lr for that step)."""
        opt = TorchOptimizer(self.factory(list(model.parameters())), count)
        if opt.scheduler is not None and count:
            with warnings.catch_warnings():          # "scheduler.step() before optimizer.step()": on purpose
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(count):
                    opt.scheduler.step()
        if moments:
            for name, p in model.named_parameters():
                entry = {k: torch.as_tensor(np.asarray(v[name])).to(p).clone()     # p's dtype and device
                         for k, v in moments.items() if name in v}
                if entry:
                    if not isinstance(opt.opt, torch.optim.SGD):     # the others keep torch's "step"
                        entry["step"] = torch.tensor(float(count))
                    opt.state[p] = entry
        return opt

    def loss(self, model, x, y):
        dtype = self.dtype if next(model.parameters()).dtype == getattr(torch, self.dtype) else "float64"
        return self.loss_fn(call(model, as_torch(x, dtype, device=self.device)),
                            as_torch(y, dtype, integer=self.integer, device=self.device))

    def outputs(self, model, x, dtype: str | None = None) -> np.ndarray:
        """What is compared of the model's output on x (pytrees.view), eval mode, no grad."""
        with torch.no_grad():
            return view(call(model.eval(), as_torch(x, dtype or self.dtype, device=self.device)),
                        self.output).cpu().numpy()

    def eval_loss(self, arrays: dict, x, y, dtype: str | None = None) -> float:
        """The loss of the model with these arrays, in eval mode, on the whole data."""
        with torch.no_grad():
            return float(self.loss(self.model(arrays, dtype).eval(), x, y))

    def step(self, model, opt, x, y) -> tuple:
        """(loss, grads, params after, moments after, count after) of one step."""
        opt.zero_grad()
        loss = self.loss(model, x, y)
        loss.backward()
        grads = {n: p.grad.detach().cpu().numpy().copy() for n, p in model.named_parameters()}
        opt.step()
        return (float(loss.detach()), grads, torch_arrays(model), *moments_of(model, opt))

    def predict(self, arrays: dict, x) -> np.ndarray:
        return self.outputs(self.model(arrays), x)


def moments_of(model, opt: TorchOptimizer) -> tuple[dict, int]:
    """({"exp_avg": {name: array}, ...}, steps taken) of a torch optimizer."""
    out = {}
    for name, p in model.named_parameters():
        for key, value in opt.state.get(p, {}).items():
            if key in MOMENT_KEYS and value is not None:
                out.setdefault(key, {})[name] = value.detach().cpu().numpy().copy()
    return out, opt.steps


class Teacher:
    """torch's own training loop, kept between steps; `state()` is what the NNX side
    starts each teacher-forced step from."""

    def __init__(self, side: TorchSide):
        self.side = side
        self.model = side.model()
        self.opt = side.optimizer(self.model)

    def state(self) -> tuple[dict, dict, int]:
        return (torch_arrays(self.model), *moments_of(self.model, self.opt))

    def step(self, x, y) -> tuple:
        return self.side.step(self.model, self.opt, x, y)


def _step_diff(side: TorchSide, state: tuple, x, y, reference: tuple, dtype: str | None = None,
               keep: list | None = None) -> tuple:
    """|a torch step in `dtype` (None: the run's) from `state` - reference| per quantity
    (loss, grads, params after, moments after); the step itself appended to `keep`."""
    arrays, moments, count = state
    model = side.model(arrays, dtype)
    r = side.step(model, side.optimizer(model, moments, count), x, y)
    if keep is not None:
        keep.append(r)
    return (abs(r[0] - reference[0]), _absdiff(r[1], reference[1]), _absdiff(r[2], reference[2]),
            {k: _absdiff(d, reference[3].get(k, {})) for k, d in r[3].items()})


def _member_spread(side: TorchSide, state: tuple, x, y, reference: tuple, members: int, seed: int, stream: int,
                   move, dtype, keep: list | None = None):
    """The largest |member - reference| per quantity of a step (loss, grads, params
    after, moments after) over `members` torch steps in `dtype` from `state`, every
    float array and input moved by `move` (one ulp, in a random direction, drawn from
    the rng of [seed, stream]), merged with row_order_spread's. keep: a list that gets
    every member's step (port_exact.py judges with them)."""
    arrays, moments, count = state
    rng = np.random.default_rng([seed, stream])
    targets = np.asarray(y, np.float64) if np.issubdtype(np.asarray(y).dtype, np.floating) else y
    spreads = None
    for _ in range(members):
        moved = {k: move(v, rng) if np.issubdtype(np.asarray(v).dtype, np.floating) else v for k, v in arrays.items()}
        moved_m = {k: {n: np.abs(move(v, rng)) if k in NON_NEGATIVE else move(v, rng) for n, v in d.items()}
                   for k, d in moments.items()}
        xm = _moved_inputs(x, rng, move)
        spreads = _merge(spreads, _step_diff(side, (moved, moved_m, count), xm, targets, reference, dtype, keep))
    return _merge(spreads, row_order_spread(side, state, x, y, reference, members, seed, keep))


def step_spread(side: TorchSide, state: tuple, x, y, reference: tuple, members: int = MEMBERS, seed: int = 0,
                keep: list | None = None):
    """Per quantity of a float32 step, the spread of `members` float64 steps from
    `state` moved by one float32 ulp, one member at a time (each appended to `keep`)."""
    # The float64 members model one rounding per product; the row-order members model
    # the float32 batch sums themselves (a conv bias's gradient sums N x H x W terms).
    return _member_spread(side, state, x, y, reference, members, seed, 7, moved_one_ulp, "float64", keep)


def float64_spread(side: TorchSide, state: tuple, x, y, reference: tuple, members: int = MEMBERS, seed: int = 0):
    """float64's own noise where the table alone is exceeded: torch steps with the
    batch's rows in other orders (row_order_spread), and from the state moved by one
    float64 ulp, which rounds each row's own sums otherwise. That is the noise of a
    gradient that is rounding alone: an attention's key bias has a zero gradient (the
    softmax does not see a shift of every key) that both sides compute as ~1e-18 of
    either sign, and Adam's first step divides it by eps into an update of ~1e-12,
    which neither the table's atol nor other row orders hold."""
    return _member_spread(side, state, x, y, reference, members, seed, 13,
                          lambda v, rng: moved_one_ulp(v, rng, np.float64), None)


def row_order_spread(side: TorchSide, state: tuple, x, y, reference: tuple, members: int = MEMBERS, seed: int = 0,
                     keep: list | None = None):
    """The same spread over torch steps in the run's own dtype, from the state itself,
    with the batch's rows in another order: the same mean, summed in another order.
    In float64 this is the reference's only noise that matters: Adam divides a gradient
    that cancels to ~1e-17 (a bias before BatchNorm) by its own size, and moves the
    parameter by ~1e-11, which the table's 1e-10 relative cannot hold."""
    if side.dropout:
        # the hash-mask dropout (port_dropout.py) picks each row's mask by its position:
        # another row order is another computation, and its spread is no rounding noise
        # (it widened the tolerance until a port missing a dropout passed rungs 2-3)
        return None
    rng = np.random.default_rng([seed, 11])
    spreads = None
    for _ in range(members if len(np.atleast_1d(y)) > 1 else 0):
        perm = rng.permutation(len(y))
        spreads = _merge(spreads, _step_diff(side, state, x[perm], np.asarray(y)[perm], reference, keep=keep))
    return spreads


def _moved_inputs(x, rng, move=moved_one_ulp):
    """Each float input moved by `move` (one float32 ulp); integer inputs (token ids) as they are."""
    return map_leaves(lambda a: move(a, rng) if np.issubdtype(np.asarray(a).dtype, np.floating) else a, x)


def _merge(spreads, here):
    if here is None:
        return spreads
    return here if spreads is None else (
            max(spreads[0], here[0]), _max(spreads[1], here[1]), _max(spreads[2], here[2]),
            {k: _max(spreads[3][k], d) for k, d in here[3].items()})


def _absdiff(a: dict, b: dict) -> dict:
    return {k: np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)) for k in b if k in a}


def _max(a: dict, b: dict) -> dict:
    return {k: np.maximum(a[k], b[k]) for k in a}


def output_spread(side: TorchSide, arrays: dict, x, reference: np.ndarray, members: int = MEMBERS) -> np.ndarray:
    """The float32 noise of the model's output: float64 forward passes (eval mode) with
    every weight and float input moved by one float32 ulp."""
    rng = np.random.default_rng([0, 8])
    outs = []
    for _ in range(members):
        moved = {k: moved_one_ulp(v, rng) for k, v in arrays.items()}
        outs.append(side.outputs(side.model(moved, "float64"), _moved_inputs(x, rng), "float64"))
    return np.max(np.abs(np.asarray(outs) - np.asarray(reference, np.float64)), axis=0)
