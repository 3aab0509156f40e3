"""float32 steps judged against float64: where a quantity exceeds the measured step
bound (step_noise.StepBound over port_torch.step_spread), each tensor outside it is
judged by its error against torch's step in float64 from the same float32 state,
against torch float32's own error (criterion.error_judgement: per tensor, in RMS, at
most ERROR_MULTIPLE x torch's).

Why: two correct float32 implementations sum in different orders (a conv's weight
gradient sums batch x H x W terms; attention; XLA's elementwise functions), and one-ulp
moves of the inputs do not model that: on a correct MNIST-style port the step bound was
exceeded 877 x, while jaxport's gradient was nearer float64 than torch's own. A bug is
orders of magnitude above torch's own error (a LayerNorm eps of 1e-6 for 1e-5: 37.6 x).

Not for the tutorial's examples (PortRun.float64_fallback False): every float32 step
of theirs holds the measured bound, and an RMS ratio against float64 cannot see a bias
correction computed in float32 (1.3e-5 relative off in every update, a few ulps of
each weight): with the fallback the tutorial network's planted bug passed rungs 2-5
and was caught only at rung 6; without it, at rung 4.
"""
from __future__ import annotations

import numpy as np

from parity_tests.engine.bounds.criterion import error_judgement, fits, rms


def exact_step(side, state: tuple, x, y) -> tuple:
    """torch's step in float64 from the float32 state (arrays, moments, count)."""
    arrays, moments, count = state
    floating = lambda v: np.issubdtype(np.asarray(v).dtype, np.floating)    # noqa: E731
    model = side.model({k: np.asarray(v, np.float64) if floating(v) else v for k, v in arrays.items()}, "float64")
    moments64 = {k: {n: np.asarray(v, np.float64) for n, v in d.items()} for k, d in moments.items()}
    y64 = np.asarray(y, np.float64) if floating(y) else y
    return side.step(model, side.optimizer(model, moments64, count), x, y64)


def check_against_float64(run, rung: int, quantities: list, step) -> bool:
    """quantities: (quantity name, actual, expected, tolerance, torch float64's value[,
    the quantity in each member of the step bound]) of one float32 step. Tensors within
    `tolerance` are checked with it, together; each other one by its error against
    float64, at most ERROR_MULTIPLE x the largest of torch's own and its members'."""
    def by_error(quantity, actual, expected, e64, members, scale=0.0, entry=None) -> bool:
        a, e, suffix, bound = error_judgement(actual, expected, e64, members, scale=scale, members_are="members")
        return run.check(a, e, rung=rung, quantity=quantity + suffix, tol=bound, step=step, entry=entry)
    ok = True
    for name, actual, expected, tol, e64, *rest in quantities:
        members = rest[0] if rest else ()
        if not isinstance(expected, dict):
            ok &= (run.check(actual, expected, rung=rung, quantity=name, tol=tol, step=step)
                   if fits(actual, expected, tol) else by_error(name, actual, expected, e64, members))
            continue
        inside = [k for k in expected if fits({k: actual[k]}, {k: expected[k]}, tol)]
        if inside:
            ok &= run.check({k: actual[k] for k in inside}, {k: expected[k] for k in inside}, rung=rung, quantity=name,
                            tol=tol, step=step)
        outside = [k for k in expected if k not in inside]
        # A bias's gradient sums the terms its layer's weight gradient sums times the inputs:
        # rounded at their size, not at what is left where they cancel. An attention's key bias
        # has a zero gradient (softmax ignores a shift), and under MKL's AVX2 path its exp_avg_sq
        # (the residue squared) was 66 x torch's, 4e-4 x 4 ulps of the key weight's. Not the whole
        # model's largest tensor: that let a LayerNorm eps of 1e-6 pass in a Transformer encoder
        # (its gradients 10-39 x torch's error, as large as a correct ResNet's BatchNorm gradients
        # were before jaxport's BatchNorm summed as torch's: jaxport/batch_norm.py). Each layer's
        # scale once, not per tensor outside.
        scales = {key: max(rms(v, 0.0) for n, v in e64.items() if _layer(n) == key) for key in map(_layer, outside)}
        for k in outside:
            ok &= by_error(f"{name}: {k}", actual[k], expected[k], e64[k], [m[k] for m in members if k in m],
                           scales[_layer(k)], entry=k)
    return ok


def _layer(name: str) -> tuple:
    """(module path, kind): the gradients and the parameters are a kind each, as is each
    optimizer moment ("attn.k_proj.bias (exp_avg_sq)")."""
    tensor, _, kind = name.partition(" (")
    return tensor.rpartition(".")[0], kind


def check_one(run, rung: int, name: str, actual, expected, tol, exact, step=None, members=()) -> bool:
    """One quantity: in float32, what `tol` does not hold is judged against `exact()`
    (torch's float64 value, computed only then), beside `members` (the quantity in each
    member of the step bound `tol`); else checked with `tol` as it is."""
    if run.dtype != "float32" or not run.float64_fallback or fits(actual, expected, tol):
        return run.check(actual, expected, rung=rung, quantity=name, tol=tol, step=step)
    return check_against_float64(run, rung, [(name, actual, expected, tol, exact(), members)], step)
