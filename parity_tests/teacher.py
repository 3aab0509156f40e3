"""Single steps for the teacher-forced rung (thousands per cell), and the referee for
ReLU kinks that float32 cannot decide.

The API's train_step rebuilds the model and converts every tensor through NNX state
objects on each call (~30 ms for the network); over 1000 steps x 4 cells that alone
would blow the suite's time budget. So:
- TorchTeacher keeps torchref's model, optimizer and loss between steps, exactly like
  torchref.fit (the ladder checks its losses equal fit's bit for bit);
- JaxStepper calls jaxport's own compiled step (jaxport.training._step_fn, the function
  train_step runs) with the exchange-format arrays put into the pytree leaves directly
  (the ladder checks it equals jaxport.train_step bit for bit).
"""
from __future__ import annotations

import dataclasses
import itertools

import jax
import numpy as np
import torch
from jax.tree_util import DictKey, GetAttrKey
from torch import nn

import jaxport.convert as jc
import jaxport.training as jt
import torchref
import torchref.training as tt
from portcore import convert, registry
from jaxport.numerics import dtype_scope, jax_device, jax_dtype

# Optax's state fields and torch's names for the same moments.
MOMENTS = {"mu": "exp_avg", "nu": "exp_avg_sq", "trace": "momentum_buffer"}


class TorchTeacher:
    def __init__(self, cell, config, params, opt_state=None):
        self.cell = cell
        self.model = tt.build_model(cell.example, params, **cell.kw)
        self.named = tt.named_parameters(self.model, cell.example, cell.form)
        self.optimizer = tt.make_optimizer(config, self.model.parameters())
        if opt_state:
            tt._state_from_numpy(self.optimizer, self.named, {k: v.copy() for k, v in opt_state.items()})
        self.loss_fn = torchref.example_module(cell.example).loss_fn

    def state(self) -> tuple[dict, dict]:
        params = {n: p.detach().cpu().numpy().copy() for n, p in self.named.items()}
        return params, tt._state_to_numpy(self.optimizer, self.named)

    def step(self, xb, yb):
        """(loss, grads, new params, new optimizer state), like train_step."""
        xt, yt = (tt._tensors(a, self.cell.dtype, self.cell.device) for a in (xb, yb))
        loss = self.loss_fn(self.model(xt), yt)
        self.optimizer.zero_grad()
        loss.backward()
        grads = {n: p.grad.detach().cpu().numpy().copy() for n, p in self.named.items()}
        self.optimizer.step()
        return (loss.item(), grads, *self.state())


class Layout:
    """Where each exchange-format entry lives among a pytree's leaves, through the one
    converter (portcore/convert.py); entries an optimizer lacks read as zeros."""

    def __init__(self, template, example, form):
        leaves, self.treedef = jax.tree_util.tree_flatten_with_path(template)
        self.layers, self.paths = registry.get(example).layers, jc.flax_paths(example, form)
        self.slots = []                                    # (field, NNX path, dtype, shape)
        for path, leaf in leaves:
            field, keys = "", []
            for k in path:
                if isinstance(k, GetAttrKey) and k.name in MOMENTS:
                    field = MOMENTS[k.name]
                elif isinstance(k, GetAttrKey) and k.name == "count":
                    field = "step"
                elif isinstance(k, DictKey):
                    keys.append(k.key)
            self.slots.append((field, tuple(keys), leaf.dtype, leaf.shape))

    def tree(self, arrays: dict):
        flax = {}
        for field in {slot[0] for slot in self.slots} - {"step"}:
            named = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(field + "/")} \
                if field else {k: v for k, v in arrays.items() if "/" not in k and k != "step"}
            flax[field] = convert.to_flax(self.layers, named, self.paths)
        leaves = []
        for field, path, dtype, shape in self.slots:
            value = arrays.get("step") if field == "step" else flax[field].get(path)
            leaves.append(np.zeros(shape, dtype) if value is None else np.asarray(value, dtype))
        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    def arrays(self, tree) -> dict:
        out, flat = {}, {}
        for (field, path, _, _), leaf in zip(self.slots, jax.tree_util.tree_leaves(tree)):
            if field == "step":
                out["step"] = np.asarray(float(leaf))
            else:
                flat.setdefault(field, {})[path] = np.asarray(leaf)
        for field, leaves in flat.items():
            prefix = f"{field}/" if field else ""
            out.update({prefix + n: v for n, v in convert.from_flax(self.layers, leaves, self.paths).items()})
        return out


class JaxStepper:
    cache: dict = {}

    @classmethod
    def get(cls, cell, config):
        if (cell, config) not in cls.cache:
            cls.cache[(cell, config)] = cls(cell, config)
        return cls.cache[(cell, config)]

    def __init__(self, cell, config):
        self.scope = cell.dtype
        with dtype_scope(cell.dtype):
            graphdef, state = jt._split(cell.example, None, cell.dtype, cell.device, cell.form)
            self.params = Layout(state, cell.example, cell.form)
            self.opt = Layout(jt.make_optimizer(config).init(state), cell.example, cell.form)
            self.step = jt._step_fn(cell.example, graphdef, config)
            self.device, self.dtype = jax_device(cell.device), jax_dtype(cell.dtype)

    def __call__(self, params, opt_state, xb, yb):
        # numpy in: jit's own transfer (per-leaf device_put costs ~1 ms a step).
        with dtype_scope(self.scope), jax.default_device(self.device):
            loss, grads, new, opt = self.step(self.params.tree(params), self.opt.tree(opt_state),
                                              np.asarray(xb, self.dtype), np.asarray(yb, self.dtype))
        return float(loss), self.params.arrays(grads), self.params.arrays(new), self.opt.arrays(opt)


def opt_state_pair(jax_state: dict, torch_state: dict) -> tuple[dict, dict]:
    """Both optimizer states over the union of their keys, a missing moment as zeros
    (torch creates its SGD momentum buffer at the first step; optax starts it at 0)."""
    keys = sorted(set(jax_state) | set(torch_state))
    fill = lambda s, o, k: s[k] if k in s else np.zeros_like(o[k])  # noqa: E731
    return ({k: fill(jax_state, torch_state, k) for k in keys},
            {k: fill(torch_state, jax_state, k) for k in keys})


# ---- ReLU kinks that the dtype cannot decide -----------------------------------------
UNIT_ROUNDOFF = {"float32": 2.0 ** -24, "float64": 2.0 ** -53}
MAX_KINKS = 8


def _hidden_linears(model) -> list:
    """The Linear layers whose outputs go through a ReLU: all but the last."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][:-1]


def undecidable_kinks(cell, config, state, xb) -> list[tuple[int, int, int]]:
    """(layer, sample, unit) whose pre-activation z = W h + b lies within the dtype's
    worst-case dot-product rounding bound (n + 1) u (|W| |h| + |b|) of 0, computed in
    float64 from the same weights: there, which side of the ReLU's kink a sample falls on
    (and so whether it contributes to the unit's gradient) is down to rounding order."""
    teacher = TorchTeacher(dataclasses.replace(cell, dtype="float64"), config, state[0])
    u, found = UNIT_ROUNDOFF[cell.dtype], []

    def probe(module, inputs, out):
        h = inputs[0].abs()
        bound = (module.in_features + 1) * u * (h @ module.weight.abs().T + module.bias.abs())
        found.append(out.abs() <= bound)
    handles = [m.register_forward_hook(probe) for m in _hidden_linears(teacher.model)]
    try:
        with torch.no_grad():
            teacher.model(tt._tensors(xb, "float64", cell.device))
    finally:
        for handle in handles:
            handle.remove()
    return [(layer, *map(int, idx)) for layer, mask in enumerate(found) for idx in mask.nonzero()]


def step_with_kinks_decided(cell, config, state, xb, yb, kinks, signs):
    """One float64 torch step from `state` with each kink's pre-activation set to
    +-1e-300 (ReLU' 1 or 0); the forward values move by less than their rounding bound,
    and gradients flow through to W, b and h as before."""
    teacher = TorchTeacher(dataclasses.replace(cell, dtype="float64"), config, state[0], state[1])
    layers = _hidden_linears(teacher.model)

    def force(layer):
        def hook(module, inputs, out):
            target, mask = torch.zeros_like(out), torch.zeros_like(out, dtype=torch.bool)
            for (k, sample, unit), sign in zip(kinks, signs):
                if k == layer:
                    target[sample, unit], mask[sample, unit] = sign * 1e-300, True
            # value `target` exactly (out - out.detach() is 0), gradient 1 to `out`
            return torch.where(mask, target + (out - out.detach()), out)
        return hook
    handles = [m.register_forward_hook(force(i)) for i, m in enumerate(layers)]
    try:
        return teacher.step(xb, yb)
    finally:
        for handle in handles:
            handle.remove()


def kink_referee(cell, config, state, xb, yb, agree):
    """When jaxport's step disagrees with torch's: if some ReLU kinks are undecidable in
    the dtype, find a way of deciding them under which float64 torch agrees with
    jaxport (`agree(result) -> bool`, the ladder's own check). Returns (kinks, signs) or
    None (no such kinks, too many, or no decision explains the difference)."""
    kinks = undecidable_kinks(cell, config, state, xb)
    if not kinks or len(kinks) > MAX_KINKS:
        return None
    for signs in itertools.product((1.0, -1.0), repeat=len(kinks)):
        if agree(step_with_kinks_decided(cell, config, state, xb, yb, kinks, signs)):
            return kinks, signs
    return None
