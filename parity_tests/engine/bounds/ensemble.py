"""The reference's own noise: an ensemble of equally correct torch runs.

Two correct implementations of a training run differ by rounding at every step, not
only in their initial weights. The ensemble models that: M copies of the torch model,
each of whose parameters is moved by one ulp, in a random direction, after every
optimizer update (member 0 is not moved at all: it differs from the reference only by
running batched). How far the members drift from torch's own run, step by step, is the
yardstick of rungs 6 and 7 (parity_tests/engine/bounds/criterion.py).

The members run as ONE torch computation where torch.func allows: the parameters and
buffers are stacked along a leading member axis, the forward pass is `torch.func.vmap`
of the model over that axis (BatchNorm's running statistics and the shared dropout's
step counter update in place, each member's own slice), the objective is the sum of
the members' losses (its gradient with respect to member i's parameters is exactly
member i's gradient), and torch.optim's own optimizer updates the stacked tensors
elementwise, i.e. exactly as it updates each member alone. 16 members cost about twice
one run. nn.LSTM and nn.GRU have no batching rule in torch.func (aten::lstm.input,
torch 2.13): models with them run their members in turn, each in its own copy.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, vmap

import torchref
import torchref.convert as tc
import torchref.optim as torch_optim
import torchref.training as tt
from portcore import registry
from torchref.data import ArrayDataset

MEMBERS = 16


@dataclass
class Ensemble:
    step_losses: np.ndarray      # (M, steps) float64
    params: list                 # M dicts of fitted parameters (exchange names)


def _ulp_step(p: torch.Tensor, generator: torch.Generator, keep_first: bool) -> None:
    """Move every entry one ulp up or down at random, in place (row 0 kept if asked).
    nextafter towards p + 1 or p - 1 (p + 0 for row 0: no move); parameters here are
    far below 2**24, where p +- 1 would round back to p."""
    sign = torch.randint(0, 2, p.shape, generator=generator, dtype=p.dtype).mul_(2).sub_(1)
    if keep_first:
        sign[0] = 0
    p.copy_(torch.nextafter(p, p + sign))


def run(example: str, params: dict, x: np.ndarray, y: np.ndarray, order: np.ndarray, config, *,
        dtype: str, device: str = "cpu", members: int = MEMBERS, seed: int = 0,
        form: str = "class") -> Ensemble:
    """`members` torch runs from `params` over the batches of `order`, each moved by one
    ulp per parameter after every update (all but member 0). Buffers (BatchNorm's
    running statistics, the shared dropout's step counter) run along per member; the
    fitted dicts carry those that cross the API (the exchange format)."""
    model = tt.build_model(example, params, dtype=dtype, device=device, form=form)
    model.train()
    exchange = {id(t): name for name, t in tc.named_state(model, example, form).items()}
    paths = {path: exchange[id(t)] for path, t in [*model.named_parameters(), *model.named_buffers()]
             if id(t) in exchange}       # BatchNorm's num_batches_tracked runs along, unreported
    data = ArrayDataset(x, y, dtype=dtype, device=device,
                        label_dtype=registry.get(example).label_dtype(dtype))
    batches = (data[row[s:s + config.batch_size]] for row in np.asarray(order)      # drawn as the runs go:
               for s in range(0, len(row), config.batch_size))                     # long runs stay small
    # torch.func has no batching rule for nn.LSTM / nn.GRU (aten::lstm.input): those
    # members run one after another, each in its own copy of the model
    recurrent = any(isinstance(m, torch.nn.RNNBase) for m in model.modules())
    loop = _members_in_turn if recurrent else _members_vmapped
    losses, state = loop(model, torchref.example_module(example).loss_fn, batches, config, members,
                         torch.Generator().manual_seed(seed))
    fitted = [{paths[path]: _exchange_value(v[i], dtype) for path, v in state.items() if path in paths}
              for i in range(members)]
    return Ensemble(losses.cpu().numpy().astype(np.float64), fitted)


def _members_vmapped(model, loss_fn, batches, config, members, generator) -> tuple:
    """ONE computation: parameters and buffers stacked along a member axis, the model
    vmapped over it (in-place buffer updates land in each member's slice)."""
    stacked = {path: torch.nn.Parameter(p.detach().unsqueeze(0).repeat(members, *[1] * p.dim()))
               for path, p in model.named_parameters()}
    buffers = {path: b.detach().unsqueeze(0).repeat(members, *[1] * b.dim()).clone()
               for path, b in model.named_buffers()}
    optimizer = torch_optim.make_optimizer(config, list(stacked.values()))

    def losses(ps, bs, xb, yb):                  # one member's loss
        return loss_fn(functional_call(model, (ps, bs), (xb,)), yb)
    batched, out = vmap(losses, in_dims=(0, 0, None, None)), []
    for xb, yb in batches:
        member_losses = batched(stacked, buffers, xb, yb)             # (M,)
        optimizer.zero_grad()
        member_losses.sum().backward()
        optimizer.step()
        with torch.no_grad():
            for p in stacked.values():
                _ulp_step(p, generator, keep_first=True)
        out.append(member_losses.detach())
    return (torch.stack(out, dim=1) if out else torch.zeros(members, 0)), {**stacked, **buffers}


def _members_in_turn(model, loss_fn, batches, config, members, generator) -> tuple:
    """The same runs, each member its own copy of the model and optimizer, stepped in
    turn at every batch (the same nudges as the vmapped members: one generator)."""
    copies = [copy.deepcopy(model) for _ in range(members)]
    optimizers = [torch_optim.make_optimizer(config, list(m.parameters())) for m in copies]
    out = []
    for xb, yb in batches:
        step = []
        for m, optimizer in zip(copies, optimizers):
            loss = loss_fn(m(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step.append(loss.detach())
        with torch.no_grad():
            for path, _ in model.named_parameters():
                stacked = torch.stack([m.get_parameter(path) for m in copies])
                _ulp_step(stacked, generator, keep_first=True)
                for m, moved in zip(copies, stacked):
                    m.get_parameter(path).copy_(moved)
        out.append(torch.stack(step))
    state = {path: torch.stack([dict(m.named_parameters())[path] for m in copies]) for path, _ in model.named_parameters()}
    state.update({path: torch.stack([dict(m.named_buffers())[path] for m in copies]) for path, _ in model.named_buffers()})
    return (torch.stack(out, dim=1) if out else torch.zeros(members, 0)), state


def _exchange_value(t: torch.Tensor, dtype: str) -> np.ndarray:
    """As torchref.convert.to_numpy writes it: integer buffers as the model's float dtype."""
    t = t.detach() if t.is_floating_point() else t.detach().to(getattr(torch, dtype))
    return t.cpu().numpy().copy()
