"""The reference's own noise for rungs 6-7: an ensemble of equally correct torch runs.

Two correct implementations of a training run differ by rounding at every step, not
only in their initial weights. The ensemble models that, for any reference side
(sides/port_torch.TorchSide: a user's module or an example's torchref model): M runs of
the torch model from the same start over the same batches,
- each of whose parameters moves by one ulp, in a random direction, after every
  optimizer update (member 0 is not moved: it differs from torch's own run only by
  running batched);
- each taking every batch's rows in another order (the same mean, summed in another
  order: float32 batch sums round differently in another implementation; an LSTM's
  gradients sum over rows and time steps, and moving the parameters alone
  underestimated that, a correct port's fitted input kernel 4x the spread), except
  under the hash-mask dropout, whose masks follow the rows' positions;
- each rounding every parametrised layer's output another way, one ulp either way or
  not at all per entry (bounds/rounding.py: another framework's kernels sum in other
  orders; measured on resnet18, the moves above left a correct port's loss 13x farther
  from float64 than any member after one step);
- buffers (BatchNorm's running statistics, the dropout's step counter) run along per
  member.
In float32, torch's run in float64 from the same float32 start is one more member:
torch's own float32 error, which another implementation's elementwise functions (XLA's
tanh and logistic are a few ulps from torch's, at every step) reach even where one-ulp
moves do not (criterion.py judges against it too).

The members run as ONE torch computation where torch.func allows: parameters and
buffers stacked on a leading member axis, the model vmapped over it with
`functional_call`, the objective the sum of the members' losses (its gradient with
respect to member i's parameters is member i's gradient), and the side's own optimizer
updating the stacked tensors elementwise, as it updates each member alone. 16 members
cost about twice one run. They run in turn, each in its own copy, where vmap cannot:
nn.LSTM and nn.GRU (no batching rule for aten::lstm.input in torch 2.13), several
inputs, a clipped optimizer (the global norm would mix the members) or a model that
vmap refuses.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.func import functional_call, vmap

from parity_tests.engine.bounds.rounding import LayerRounding
from parity_tests.engine.sides.port_models import torch_arrays
from parity_tests.engine.sides.port_torch import Teacher, TorchOptimizer, as_torch
from parity_tests.engine.sides.pytrees import Inputs

MEMBERS = 16


def members(side, x, y, batches: list, count: int = MEMBERS, seed: int = 0) -> tuple[np.ndarray, list]:
    """(losses (M, steps) float64, M fitted {torch name: array}) of the ensemble, the
    float64 run appended in float32."""
    generator, rng = torch.Generator().manual_seed(seed), np.random.default_rng([seed, 9])
    # rows[step][m]: member m's order of the batch's rows (member 0, and dropout: as given)
    rows = [[idx if m == 0 or side.dropout else rng.permutation(idx) for m in range(count)] for idx in batches]
    try:
        losses, fitted = _vmapped(side, x, y, rows, count, generator)
    except (RuntimeError, NotImplementedError):              # vmap refuses the model: in turn
        generator.manual_seed(seed)
        losses, fitted = _in_turn(side, x, y, rows, count, generator)
    if side.dtype == "float32":
        exact = exact_run(side, x, y, batches)
        losses, fitted = np.vstack([losses, exact[0][None]]), [*fitted, exact[1]]
    return losses, fitted


def exact_run(side, x, y, batches: list) -> tuple[np.ndarray, dict]:
    """torch's run in float64 from the float32 start: (losses, fitted arrays)."""
    model = side.model(None, "float64")
    opt = side.optimizer(model)
    losses = [side.step(model, opt, x[idx], y[idx])[0] for idx in batches]
    return np.array(losses), torch_arrays(model)


def _train_step(side, teacher, xb, yb) -> float:
    """One step of a member (the side's step without copying gradients and state out)."""
    teacher.opt.zero_grad()
    loss = side.loss(teacher.model, xb, yb)
    loss.backward()
    teacher.opt.step()
    return float(loss.detach())


def _ulp_step(p: torch.Tensor, generator: torch.Generator) -> None:
    """Move every entry one ulp up or down at random, in place, but row 0's (member 0 is
    not moved). nextafter towards p + 1 or p - 1; parameters here are far below 2**24,
    where p +- 1 would round back to p."""
    sign = torch.randint(0, 2, p.shape, generator=generator, dtype=p.dtype).mul_(2).sub_(1)
    sign[0] = 0
    p.copy_(torch.nextafter(p, p + sign))


def _vmapped(side, x, y, rows, count, generator) -> tuple[np.ndarray, list]:
    """ONE computation: parameters and buffers stacked on a member axis, the model
    vmapped over it (in-place buffer updates land in each member's slice). Refused
    (NotImplementedError) where vmap cannot run: recurrent layers, several inputs."""
    if isinstance(x, Inputs) or any(isinstance(m, torch.nn.RNNBase) for m in side.torch_model.modules()):
        raise NotImplementedError("no vmap batching rule for nn.LSTM and nn.GRU; several inputs run in turn")
    model = side.model().train()
    stacked = {n: torch.nn.Parameter(p.detach().unsqueeze(0).repeat(count, *[1] * p.dim()))
               for n, p in model.named_parameters()}
    buffers = {n: b.detach().unsqueeze(0).repeat(count, *[1] * b.dim()).clone() for n, b in model.named_buffers()}
    opt = TorchOptimizer(side.factory(list(stacked.values())))
    if getattr(opt.opt.step, "clips", False):
        raise NotImplementedError("a clipped optimizer's global norm would mix the members")

    rounding, member_ids = LayerRounding(model), torch.arange(count)

    def loss(ps, bs, member, xb, yb):             # one member's loss
        rounding.member = member
        return side.loss_fn(functional_call(model, (ps, bs), (xb,)), yb)
    # every member's rows, or (dropout: all in the given order) the batch once
    on_rows = 0 if not side.dropout else None
    batched, out = vmap(loss, in_dims=(0, 0, 0, on_rows, on_rows)), []
    for members_rows in rows:
        take = (lambda a: np.stack([a[r] for r in members_rows])) if on_rows == 0 else (lambda a: a[members_rows[0]])
        xb = as_torch(take(x), side.dtype, device=side.device)
        yb = as_torch(take(np.asarray(y)), side.dtype, integer=side.integer, device=side.device)
        member_losses = batched(stacked, buffers, member_ids, xb, yb)
        opt.zero_grad()
        member_losses.sum().backward()
        opt.step()
        with torch.no_grad():
            for p in stacked.values():
                _ulp_step(p, generator)
        out.append(member_losses.detach().cpu().numpy().astype(np.float64))
    state = {**stacked, **buffers}
    arrays = torch_arrays(model)                 # the names kept (num_batches_tracked left out)
    fitted = [{n: state[n][m].detach().cpu().numpy().copy() for n in arrays} for m in range(count)]
    return np.array(out).T.reshape(count, len(rows)), fitted


def _in_turn(side, x, y, rows, count, generator) -> tuple[np.ndarray, list]:
    """The same runs, each member its own copy of the model and optimizer, stepped in
    turn at every batch (the same moves as the vmapped members: one generator)."""
    teachers = [Teacher(side) for _ in range(count)]
    for m, t in enumerate(teachers):
        LayerRounding(t.model).member = torch.tensor(m)
    out = []
    for members_rows in rows:
        out.append([_train_step(side, t, x[r], y[r]) for t, r in zip(teachers, members_rows)])
        with torch.no_grad():
            for n, _ in teachers[0].model.named_parameters():
                stacked = torch.stack([t.model.get_parameter(n) for t in teachers])
                _ulp_step(stacked, generator)
                for t, moved in zip(teachers, stacked):
                    t.model.get_parameter(n).copy_(moved)
    return np.array(out, np.float64).T.reshape(count, len(rows)), [torch_arrays(t.model) for t in teachers]
