"""Where a port's numbers first differ: every module's output (in the order the modules
finish, so the innermost culprit comes first); then, where a parameter's gradient
differs, every module's output gradient (in backward order, the reverse), else None.

Tolerance (LOCATE_RTOL): |diff| <= rtol x the largest |entry| of the torch tensor. One
module's output is a sum rounded at the scale of its terms, not of each entry, so the
bound is relative to the tensor's largest entry, not elementwise. float64: 1e-10, the
table's single-computation tolerance (parity.FLOAT64). float32: 4e-6, 67 float32 ulps
of the largest entry. Measured (max over every module's output and output gradient):
correct float32 ports of the tests' MLP, LSTM, CNN and residual blocks 2.9e-7, 6.6e-7,
3.5e-7 and 1.0e-6; float64 at most 4.1e-15. A LayerNorm epsilon of 1e-6 instead of
1e-5 moves the MLP's norm output by 1.9e-5 of its largest entry (either dtype), tanh-
instead of erf-GELU moves the next module's input by ~2e-4. test_harness_bugs.py
asserts correct ports stay within half the tolerance and every planted bug exceeds it.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from parity_tests.engine.locator.layouts import difference, known_perm, pair_values
from parity_tests.engine.locator.locate_trace import nnx_trace, torch_trace
from parity_tests.engine.sides import tree_match
from parity_tests.engine.sides.port_models import Port, nnx_to_torch_entries
from parity_tests.engine.sides.port_nnx import NnxRunner
from parity_tests.engine.sides.port_torch import as_torch
from portcore import convert

LOCATE_RTOL = {"float64": 1e-10, "float32": 4e-6}


def _flattened(port: Port, torch_value: np.ndarray, module, torch_inputs, flat_order) -> np.ndarray:
    """A Flatten of an NCHW map as NNX flattens its NHWC one (input_layout "nhwc"), and
    a flattened (N, C*H*W) activation before a Linear whose kind declares input_chw in
    NNX's H, W, C column order (flat_order; None elsewhere). Other layouts: layouts.py."""
    if port.input_layout == "nhwc" and type(module).__name__ == "Flatten" and torch_inputs \
            and np.ndim(torch_inputs[0]) == 4:
        return torch_inputs[0].transpose(0, 2, 3, 1).reshape(torch_inputs[0].shape[0], -1)
    if flat_order is not None and np.ndim(torch_value) == 2 and torch_value.shape[1] == len(flat_order):
        return torch_value[:, flat_order]
    return torch_value


def _flat_orders(port: Port, order: list, outputs: dict) -> dict:
    """{module call: NHWC column order} for the module calls that finish after the last
    4-D output and before a Linear whose kind flattens NHWC (input_chw): their (N, C*H*W)
    outputs are the flattened map in NNX's order."""
    out = {}
    for k, key in enumerate(order):
        chw = getattr(port.layers.get(key[0]), "input_chw", None)
        if chw is None:
            continue
        columns = np.arange(np.prod(chw)).reshape(chw).transpose(1, 2, 0).ravel()
        for before in reversed(order[:k]):
            if any(np.ndim(v) == 4 for v in outputs[before] if v is not None):
                break
            out[before] = columns
    return out


def _unfitted(torch_values: list, chosen: list, nnx_values: list) -> str | None:
    """Where none of a module's torch values fits an NNX value in any layout (a max pool
    without its padding makes every later map 7x7 for 8x8): the shapes, else None. That
    is a difference, though nothing can be compared; skipped, the next module whose
    shapes agree again (a stride 2 conv: 4x4 from both) was blamed. A module with some
    values paired (torch's attention weights beside its output) is compared on those."""
    torch_shapes = [tuple(np.shape(t)) for t in torch_values if t is not None]
    nnx_shapes = [tuple(np.shape(v)) for v in nnx_values if v is not None]
    if not torch_shapes or not nnx_shapes or any(p is not None for p in chosen):
        return None
    return (f"has shape {' or '.join(map(str, torch_shapes))} in torch, "
            f"{' or '.join(map(str, nnx_shapes))} in NNX (no layout fits)")


def _compare(pairs: list, rtol: float, floor: float = 0.0):
    """The worst pair's numbers (a finding's max_abs, max_rel, max_over_largest and
    rtol), and whether any pair is outside rtol."""
    worst = (0.0, 0.0, 0.0)
    for t, j in pairs:
        w = difference(j, t, floor)
        if w[2] > worst[2]:
            worst = w
    return dict(max_abs=worst[0], max_rel=worst[1], max_over_largest=worst[2], rtol=rtol), worst[2] > rtol


def locate(port: Port, runner: NnxRunner, torch_loss, jax_loss, x, y, integer_targets: bool,
           rtol: float | None = None) -> dict | None:
    """The first module whose output or output gradient differs beyond rtol (default
    LOCATE_RTOL of the dtype), or None."""
    import copy  # noqa: PLC0415

    from flax import nnx  # noqa: PLC0415
    rtol = LOCATE_RTOL[port.dtype] if rtol is None else rtol
    model = copy.deepcopy(port.torch_model)     # its forward updates BatchNorm's running stats
    nnx_modules = {tuple(p): m for p, m in nnx.iter_modules(port.nnx_model) if p}
    modules = dict(model.named_modules())
    # containers too (a BasicBlock inside an nn.Sequential is `layers.1` of an
    # nnx.Sequential): matched by structure, the port's own map (name_map) first
    matched = tree_match.match(model, port.nnx_model, [p for p in modules if p])
    heads = {path: port.flax_paths.get(path) or matched.get(path) or convert.flax_path(path)
             for path in modules if path}
    by_nnx = {head: path for path, head in heads.items() if head in nnx_modules}
    t_rec = torch_trace(model, as_torch(x, port.dtype), as_torch(y, port.dtype, integer=integer_targets),
                        torch_loss, set(by_nnx.values()))
    j_rec = nnx_trace(port.nnx_model, port.nnx_input(x), y, jax_loss, by_nnx, port.dtype)
    nnx_of = {path: nnx_modules[head] for head, path in by_nnx.items()}
    # records are keyed (path, call): a module called twice is compared call by call
    common = [k for k in sorted(t_rec, key=lambda k: t_rec[k]["end"]) if k in j_rec and "outputs" in t_rec[k]]
    calls = Counter(path for path, _ in t_rec)

    def named(key):
        return key[0] if calls[key[0]] == 1 else f"{key[0]} (call {key[1] + 1} of {calls[key[0]]})"

    flat_orders = _flat_orders(port, common, {k: t_rec[k]["outputs"] for k in common})
    perms: dict = {}                                           # key -> the outputs' permutations

    def pairs_of(key, what):
        values = [None if v is None else _flattened(port, v, modules[key[0]], t_rec[key]["inputs"],
                                                     flat_orders.get(key)) for v in t_rec[key][what]]
        known = next((known_perm(modules[key[0]], nnx_of[key[0]], np.ndim(v)) for v in values[:1] if v is not None),
                     None)
        pairs, chosen = pair_values(values, j_rec[key][what], known, perms.get(key) if what == "grads" else None)
        if what == "outputs":
            perms[key] = chosen
        return pairs, _unfitted(values, chosen, j_rec[key][what])

    for key in common:                                         # forward, in finishing order
        pairs, gap = pairs_of(key, "outputs")
        numbers, bad = _compare(pairs, rtol)
        if bad or gap:
            if gap and not bad:
                numbers.update(max_abs=np.inf, max_rel=np.inf, max_over_largest=np.inf)
            found = dict(layer=key[0], quantity="output", **numbers)
            in_pairs, in_gap = pairs_of(key, "inputs")
            if _compare(in_pairs, rtol)[1] or in_gap:
                previous = max((k for k in common if t_rec[k]["end"] < t_rec[key]["start"]),
                               key=lambda k: t_rec[k]["end"], default=None)
                found["note"] = (f"{named(key)}'s input already differs while "
                                 + (f"{named(previous)}'s output agrees: the difference arises between "
                                    f"{named(previous)} and {named(key)}"
                                    if previous else f"no module ran before it: the difference arises before {key[0]}")
                                 + " (a function applied between modules)")
            elif calls[key[0]] > 1:
                found["note"] = f"at {named(key)}"
            if gap:
                found["note"] = "; ".join(n for n in (found.get("note"), f"its output {gap}") if n)
            return found
    # The backward: activation gradients only locate a difference that reaches a
    # parameter's gradient. Alone they are no verdict: max pooling over a constant
    # region has ties, which torch and XLA route to different positions, and a
    # BatchNorm backward cancels at the scale of its terms; parameter gradients agree.
    t = {n: p.grad.detach().cpu().numpy() for n, p in model.named_parameters() if p.grad is not None}
    j = runner.step(runner.params(), x, y)[1]
    index = port.pullback_index(list(t))
    j_torch = nnx_to_torch_entries(index, j, {n: v.shape for n, v in t.items()})
    # A gradient that cancels to ~0 (a conv bias before BatchNorm: 1e-16 of rounding,
    # 0.8 of its own largest entry) is rounded at the scale of the model's gradients
    largest = max((float(np.max(np.abs(g))) for g in t.values() if g.size), default=0.0)
    for name in t:
        numbers, bad = _compare([(t[name], j_torch[name])], rtol, largest)
        if bad:
            differing = dict(layer=port.layer_of(name), quantity="gradient", **numbers,
                             note=f"the gradient of parameter {name} differs")
            break
    else:
        return None
    for key in reversed(common):                               # backward: the reverse order
        numbers, bad = _compare(pairs_of(key, "grads")[0], rtol)
        if bad:
            return dict(layer=key[0], quantity="gradient", **numbers,
                        note=f"outputs agree; the gradient with respect to {named(key)}'s output differs "
                             f"({differing['note']})")
    return differing
