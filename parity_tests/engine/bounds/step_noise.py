"""The float32 single-step tolerance, measured per step in ulps of the summands.

A fixed float32 tolerance (torch.testing's rtol 1.3e-6, atol 1e-5) is both too loose
and too tight: atol 1e-5 is ~100 ulps of a 0.1 weight, blind to a bias correction
1.3e-5 relative off, while a gradient that is a sum cancelling to ~1e-9 legitimately
differs by thousands of ulps of its own value. What two correct float32
implementations may differ by is set by the size of the terms summed, not of the
result: a rounding of one ulp of every product.

So each float32 step is bounded by the reference's own sensitivity to such roundings,
measured: torch repeats the step in float64 from the same state with every parameter,
optimizer moment and input moved by one float32 ulp in a random direction (MEMBERS
times). To first order, moving a weight or an input by one ulp moves every product it
enters, forward and backward, by one ulp of that product: the members' spread is what
one rounding of every summand does to each result, cancellations, ReLU kinks near 0
and Adam's division by a tiny sqrt(v) included. The backward's sums over the batch round at the scale of their terms, which moving
the inputs does not model where the terms cancel: so each member's gradient also moves
by one float32 ulp of the sum of |per-sample terms| (random sign) before the optimizer
step propagates it. The bound is

    |jaxport - torch| <= NOISE_MULTIPLE x spread + RESULT_ULPS x ulp-scale of the result

entry by entry, the second term (relative to the tensor's largest entry) covering the
final rounding of each result. Measured over every teacher-forced step of the three
examples (docs/parity-cpu.md): the largest |diff| / bound is reported there.
"""
from __future__ import annotations

import dataclasses

import numpy as np

MEMBERS = 4
MORE_MEMBERS = 16              # asked for where 4 members' bound is exceeded
NOISE_MULTIPLE = 4.0
RESULT_ULPS = 4.0
U32 = 2.0 ** -24


def moved_one_ulp(value: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """value (float32 bits) moved one float32 ulp up or down per entry, as float64."""
    v = np.asarray(value, np.float32)
    direction = np.where(rng.random(v.shape) < 0.5, np.float32(np.inf), np.float32(-np.inf))
    return np.nextafter(v, direction).astype(np.float64)


def step_spread(cell, config, state, xb, yb, reference, seed: int = 0, members: int = MEMBERS) -> tuple:
    """Per quantity of a step (loss, grads, params, optimizer state), the largest
    |member - reference| over `members` float64 torch steps from `state` moved by one
    float32 ulp. `reference` is torch's float32 step (the same 4-tuple).

    The members run as one computation (torch.func.vmap over stacked parameters, and
    torch.optim's own step on the stacked tensors, elementwise as for one member)."""
    import torch                                        # noqa: PLC0415
    from torch.func import functional_call, vmap        # noqa: PLC0415

    import torchref                                     # noqa: PLC0415
    import torchref.convert as tc                       # noqa: PLC0415
    import torchref.optim as torch_optim                # noqa: PLC0415
    import torchref.training as tt                      # noqa: PLC0415
    rng = np.random.default_rng([seed, 7])
    params, opt = state[0], state[1] or {}
    model = tt.build_model(cell.example, params, dtype="float64", device=cell.device, form=cell.form)
    names = {id(p): n for n, p in tc.named_parameters(model, cell.example, cell.form).items()}
    paths = {path: names[id(p)] for path, p in model.named_parameters()}

    def stack(value, positive=False):
        moved = np.stack([moved_one_ulp(value, rng) for _ in range(members)])
        return torch.as_tensor(np.abs(moved) if positive else moved, device=p0.device)
    p0 = next(model.parameters())
    stacked = {path: torch.nn.Parameter(stack(params[name])) for path, name in paths.items()}
    x = stack(xb)
    y = torch.as_tensor(np.asarray(yb, np.float32).astype(np.float64), device=p0.device)
    loss_fn = torchref.example_module(cell.example).loss_fn
    losses = vmap(lambda ps, xm: loss_fn(functional_call(model, ps, (xm,)), y), in_dims=(0, 0))(stacked, x)
    optimizer = torch_optim.make_optimizer(config, list(stacked.values()))
    for path, name in paths.items():
        entry = {key: stack(opt[f"{key}/{name}"], positive=key == "exp_avg_sq")
                 for key in ("exp_avg", "exp_avg_sq", "momentum_buffer") if f"{key}/{name}" in opt}
        if "step" in opt:
            entry["step"] = torch.tensor(float(opt["step"]))
        if entry:
            optimizer.state[stacked[path]] = entry
    optimizer.zero_grad()
    losses.sum().backward()
    # The backward's own sums (over the batch) round at the scale of their terms, which
    # moving the inputs does not model when the terms cancel: each member's gradient
    # also moves by one float32 ulp of the sum of |per-sample terms|, in a random
    # direction, before the optimizer propagates it.
    scale = _summand_scale(model, loss_fn, {k: v.detach()[0] for k, v in stacked.items()}, x[0], y)
    with torch.no_grad():
        for k, v in stacked.items():
            sign = torch.as_tensor(rng.integers(0, 2, v.shape) * 2 - 1, dtype=v.dtype, device=v.device)
            v.grad.add_(sign * U32 * scale[k])
    grads = {paths[k]: v.grad.detach().cpu().numpy().copy() for k, v in stacked.items()}
    optimizer.step()
    new = {paths[k]: v.detach().cpu().numpy() for k, v in stacked.items()}
    new_opt = {f"{key}/{paths[k]}": value.detach().cpu().numpy()
               for k, v in stacked.items() for key, value in optimizer.state.get(v, {}).items() if key != "step"}

    def spread(member: dict, ref: dict) -> dict:
        return {k: np.max(np.abs(member[k] - np.asarray(ref[k], np.float64)), axis=0) for k in ref if k != "step"}
    loss_spread = float(np.max(np.abs(losses.detach().cpu().numpy() - reference[0])))
    return loss_spread, spread(grads, reference[1]), spread(new, reference[2]), spread(new_opt, reference[3])


def _summand_scale(model, loss_fn, params: dict, x, y) -> dict:
    """Per parameter entry, the sum over the batch of |that sample's term of the
    gradient| (float64): the scale at which the batch sum rounds."""
    import torch                                        # noqa: PLC0415
    from torch.func import functional_call, grad, vmap  # noqa: PLC0415
    n = x.shape[0]

    def one(ps, xi, yi):                                # this sample's term of the mean loss
        return loss_fn(functional_call(model, ps, (xi[None],)), yi[None]) / n
    per_sample = vmap(grad(one), in_dims=(None, 0, 0))(params, x, y)
    return {k: torch.abs(v).sum(0) for k, v in per_sample.items()}


def output_spread(cell, params, x, reference, seed: int = 0, members: int = MEMBERS) -> np.ndarray:
    """The same for the model's output on `x`: float64 forward passes moved one ulp."""
    import torchref.training as tt                  # noqa: PLC0415
    rng = np.random.default_rng([seed, 8])
    kw = dict(cell.kw, dtype="float64")
    outs = [tt.predict(cell.example, {k: moved_one_ulp(v, rng) for k, v in params.items()}, moved_one_ulp(x, rng), **kw)
            for _ in range(members)]
    return np.max(np.abs(np.asarray(outs) - np.asarray(reference, np.float64)), axis=0)


@dataclasses.dataclass
class StepBound:
    """parity.check's tolerance for one float32 step: per entry, from step_spread."""
    spread: object                 # a float, or {name: array}
    reference: object

    def allowed(self, expected, name=None, step_axis=False):
        spread = self.spread[name] if isinstance(self.spread, dict) else self.spread
        ref = np.abs(np.asarray(self.reference[name] if isinstance(self.reference, dict) else self.reference,
                                np.float64))
        axes = tuple(range(1 if step_axis else 0, ref.ndim))
        scale = (ref.max(axis=axes, keepdims=True) if axes else ref) if ref.size else 0.0
        return NOISE_MULTIPLE * np.asarray(spread) + RESULT_ULPS * U32 * scale

    def __str__(self):
        return (f"{NOISE_MULTIPLE:g} x spread of float64 torch steps moved 1 float32 ulp"
                f" + {RESULT_ULPS:g} ulps of the tensor's largest entry")
