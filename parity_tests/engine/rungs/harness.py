"""The parity harness for your own port: a torch.nn.Module and a Flax NNX module with
the same attribute paths, checked rung by rung as the suite checks the tutorial's
examples (docs/check-your-own-port.md).

    from parity_tests.harness import check_port, locate_divergence
    report = check_port(torch_model, nnx_model, x, y, loss="mse", optimizer="adam")
    assert report.passed, report.markdown()

check_port copies the torch model's current weights into a clone of the NNX model
through the one converter (portcore/convert.py), so both start equal; neither of the
caller's models is modified. Rungs: 2 loss and outputs at init, 3 every gradient,
4 one step (and a second from torch's state), 5 every step teacher-forced from torch's
state, 6 the free run (portable criterion: horizon, then statistics), 7 the fitted
model. Dropout is compared switched off (the frameworks' random streams differ), or
with `dropout=True` on, as the project's hash-mask dropout on both sides.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time

import numpy as np

from parity_tests.engine.rungs import free_runs
from parity_tests.engine.sides.port_losses import Objective, check_targets, objective
from parity_tests.engine.sides.port_models import torch_arrays
from parity_tests.engine.sides.port_clip import with_clipping
from parity_tests.engine.sides.port_groups import with_groups
from parity_tests.engine.sides.port_candidate import PortCandidate
from parity_tests.engine.sides.port_nnx import build_port
from parity_tests.engine.sides.pytrees import Inputs, as_inputs, leaves, select, view
from parity_tests.engine.sides.port_objectives import PortInputError, optimizer_pair
from parity_tests.engine.reports.port_report import PortReport
from parity_tests.engine.rungs import port_rungs
from parity_tests.engine.rungs.port_rungs import PortRun, batches

__all__ = ["check_port", "locate_divergence", "PortReport", "PortInputError"]
RUNGS = {**port_rungs.RUNGS, **free_runs.RUNGS}


def _data(x, y, obj: Objective) -> tuple:
    x, y = as_inputs(x), np.asarray(y)           # several inputs: a tuple or dict of arrays (pytrees.py)
    if (not isinstance(x, Inputs) and np.ndim(x) == 0) or y.ndim == 0 or len(x) != len(y) or len(x) == 0:
        raise PortInputError(f"x and y need the same number of rows (x {x.shape}, y {y.shape})")
    if obj.integer:
        if not np.issubdtype(y.dtype, np.integer) and not np.all(y == np.round(y)):
            raise PortInputError(f"{obj.name} needs integer class labels in y")
        y = y.astype(np.int64)
    elif obj.name != "custom" and not np.issubdtype(y.dtype, np.floating):
        y = y.astype(np.float64)       # a custom loss gets y as given (integer labels stay integers)
    return x, y


def _on_output(obj: Objective, output) -> Objective:
    """The loss on the model's output as the caller's loss sees it: a named loss takes
    the compared array (the `output` leaf, or the one array), a caller's own pair the
    `output` leaf or, without one, the whole output (a VAE's (recon, mu, logvar))."""
    if obj.name == "custom":
        return dataclasses.replace(obj, torch=lambda out, y: obj.torch(select(out, output), y),
                                   jax=lambda out, y: obj.jax(select(out, output), y))
    def one_array(out):
        if output is None and len(leaves(out)) > 1:
            raise PortInputError(f"the model returns {len(leaves(out))} arrays and the loss {obj.name} takes one: "
                                 "pass output= (an index, key or attribute) to pick it, or a loss pair")
        return view(out, output)
    return dataclasses.replace(obj, torch=lambda out, y: obj.torch(one_array(out), y),
                               jax=lambda out, y: obj.jax(one_array(out), y))


def _setup(torch_model, nnx_model, x, y, loss, dtype, device, name_map, convert, input_layout,
           optimizer="adam", lr=None, steps=1, batch_size=1, momentum=None, weight_decay=None, *,
           loss_options=None, nesterov=False, optimizer_options=None, schedule=None, output=None,
           clip_grad_norm=None, no_decay=None, dropout=False) -> PortRun:
    if device != "cpu":
        raise PortInputError(f"device {device!r}: the harness runs on cpu only")
    import torch  # noqa: PLC0415
    from flax import nnx  # noqa: PLC0415
    if not isinstance(torch_model, torch.nn.Module):
        raise PortInputError(f"the torch model is a {type(torch_model).__name__}, not a torch.nn.Module")
    if not isinstance(nnx_model, nnx.Module):
        raise PortInputError(f"the NNX model is a {type(nnx_model).__name__}, not an nnx.Module")
    obj = _on_output(objective(loss, loss_options), output)  # an unknown loss is exit 2, before any work
    x, y = _data(x, y, obj)
    if steps < 1 or batch_size < 1:
        raise PortInputError("steps and batch_size must be positive")
    pair = optimizer_pair(optimizer, lr, momentum, weight_decay, nesterov, optimizer_options, schedule, steps)
    if clip_grad_norm is not None:
        pair = with_clipping(pair, clip_grad_norm)
    port = build_port(torch_model, nnx_model, dtype, name_map, convert, input_layout, output, dropout)
    if no_decay is not None:                   # param groups need the port's torch -> NNX map
        pair = with_groups(pair, port, no_decay, optimizer, weight_decay, optimizer_options)
    from parity_tests.engine.sides.port_nnx import NnxRunner  # noqa: PLC0415
    from parity_tests.engine.sides.port_torch import TorchSide  # noqa: PLC0415
    side = TorchSide(port.torch_model, dtype, obj.torch, pair.torch, obj.integer, port.output, port.dropout)
    runner = NnxRunner(port, obj.jax, pair.optax, pair.kind)
    _check_shapes(side, runner, port, x, y, obj)
    label = f"{type(torch_model).__name__} / {type(nnx_model).__name__}"
    return PortRun(side, PortCandidate(port, runner), x, y, batches(len(x), batch_size, steps), label,
                   obj.name, objective=obj, port=port, runner=runner,
                   settings=dict(model=label, dtype=dtype, loss=obj.label, optimizer=pair.label, steps=steps,
                                 batch_size=batch_size, rows=len(x), device=device))


def _one_line(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def _check_shapes(side, runner, port, x, y, obj: Objective) -> tuple:
    """The model's output must fit y (a broadcast (N, 1) against (N,) would be silently
    wrong in both frameworks; a class label out of range is torch's IndexError), both
    models' outputs must have one shape, and each side's loss must take them and give
    a scalar: else a bad-input error here, not a raw exception inside a rung."""
    try:
        out = side.predict(torch_arrays(port.torch_model), x[:2])
    except PortInputError:
        raise
    except Exception as error:                              # noqa: BLE001 (the user's model)
        raise PortInputError(f"the torch model cannot take x[:2] of shape {x[:2].shape}: {error}") from None
    check_targets(obj, out.shape, y)
    if obj.name not in ("custom", "cross_entropy", "nll_loss") and out.shape[1:] != y.shape[1:]:
        raise PortInputError(f"the model's output per row is {out.shape[1:]}, y's is {y.shape[1:]} (loss {obj.name})")
    try:
        nnx_shape = tuple(runner.output_shape(x[:2]))
    except Exception as error:                              # noqa: BLE001
        raise PortInputError(f"the NNX model cannot take x[:2] (layout {port.input_layout or 'as given'}): "
                             f"{_one_line(error)}") from None
    s = nnx_shape                      # NHWC outputs compare as NCHW (Port.output_in_torch_layout)
    if (s[:1] + s[3:] + s[1:3] if port.input_layout == "nhwc" and len(s) == 4 else s) != out.shape:
        raise PortInputError(f"the NNX model's output has shape {nnx_shape} on x[:2], torch's {out.shape}")
    try:
        t = side.loss(side.model().eval(), x[:2], y[:2])
        j = runner.loss_shape(x[:2], y[:2])
    except PortInputError:
        raise
    except Exception as error:                              # noqa: BLE001 (the user's loss)
        raise PortInputError(f"the loss {obj.label} cannot take the outputs {out.shape} and y[:2] {y[:2].shape}: "
                             f"{_one_line(error)}") from None
    if t.ndim or j:
        raise PortInputError(f"the loss must be a scalar: torch's has shape {tuple(t.shape)}, JAX's {j}")
    return out.shape


def check_port(torch_model, nnx_model, x, y, *, loss="mse", loss_options=None, optimizer="adam", lr=None,
               steps=100, batch_size=32, dtype="float64", device="cpu", name_map=None, convert=None,
               input_layout=None, momentum=None, weight_decay=None, nesterov=False, optimizer_options=None,
               schedule=None, rungs=tuple(RUNGS), keep_going=False, locate=True, output=None,
               clip_grad_norm=None, no_decay=None, dropout=False) -> PortReport:
    """The ladder for one port. name_map: {torch layer path: NNX path} where the names
    differ; convert: {torch layer path: LayerKind, or fn(torch arrays) -> {NNX relative
    path: array}} for layers the converter does not know (or converts wrongly for you);
    input_layout "nhwc": the NNX model takes torch's NCHW x transposed to NHWC.
    x: one array, or a tuple (positional) or dict (keywords) of arrays, rows on axis 0.
    output: the leaf of a tuple/dict/dataclass output that is compared and that a named
    loss takes (an index, a key or an attribute); a (torch_fn, jax_fn) pair without it
    takes the whole output. clip_grad_norm: torch.nn.utils.clip_grad_norm_ between
    backward and step on the torch side, the same arithmetic before the optimizer on
    the JAX side (port_clip.py). no_decay: fn(torch parameter name) -> True for the
    parameters kept out of weight decay (nanoGPT's biases and norms): a torch param
    group with weight_decay 0, the same parameters undecayed on the JAX side
    (port_groups.py). dropout: True compares training with dropout on, each nn.Dropout
    and nnx.Dropout swapped for the project's hash-mask dropout (port_dropout.py);
    by default both run with dropout off.
    loss: "mse", "bce", "bce_with_logits", "cross_entropy", "nll_loss" (classes on axis
    1, any trailing dims) or a (torch_fn, jax_fn) pair of fn(output, target) -> scalar;
    loss_options: torch's keywords (cross_entropy: label_smoothing, ignore_index;
    nll_loss: ignore_index). optimizer: "sgd", "adam", "adamw", "rmsprop", "adagrad",
    "adadelta" with torch's defaults (lr None: 1.0 for adadelta, else 1e-2; sgd's
    momentum 0.9) and torch's keywords (momentum, weight_decay, nesterov, or
    optimizer_options such as alpha, eps, rho), or a (torch factory, optax
    transformation) pair. schedule: {"kind": "step", "step_size", "gamma"} or
    {"kind": "cosine", "T_max", "eta_min"}, stepped after every optimizer step.
    keep_going: run the rungs after the first failing one too (by default they are
    skipped: each builds on the ones before). locate: on a failure, also run
    locate_divergence's search (report.located)."""
    began = time.perf_counter()
    with _one_torch_thread():
        run = _setup(torch_model, nnx_model, x, y, loss, dtype, device, name_map, convert, input_layout,
                     optimizer, lr, steps, batch_size, momentum, weight_decay, loss_options=loss_options,
                     nesterov=nesterov, optimizer_options=optimizer_options, schedule=schedule, output=output,
                     clip_grad_norm=clip_grad_norm, no_decay=no_decay, dropout=dropout)
        return run_ladder(run, rungs, keep_going, locate, began)


def run_ladder(run: PortRun, rungs=tuple(RUNGS), keep_going=False, locate=True, began=None,
               progress=None) -> PortReport:
    """The rungs over a run's two sides and the report: check_port's, and `compare`'s
    over an example's sides (keep_going, no locator: its sides are jaxport's own).
    progress: fn(rung) called as each rung starts."""
    began = time.perf_counter() if began is None else began
    for rung in rungs:
        if progress is not None:
            progress(rung)
        RUNGS[rung](run)
        if run.failures and not keep_going:
            break                  # later rungs build on this one; the locator says where
    first = run.failures[0] if run.failures else None
    located = _locate_or_say_why(run) if first is not None and locate else None
    if first is not None:
        if located and located.get("layer") and (first.get("layer") is None or first["rung"] in (2, 3)):
            first = dict(first, layer=located["layer"], located=located)
    free = run.free
    return PortReport(passed=not run.failures, first_failure=first, rows=list(run.record.rows.values()),
                      settings=run.settings, horizon=free["horizon"] if free else None,
                      steps=free["steps"] if free else 0, failures=run.failures, located=located,
                      seconds=time.perf_counter() - began)


@contextlib.contextmanager
def _one_torch_thread():
    """torch on one CPU thread for the check, as in the suite (conftest.py): the same
    reduction order on every run, and for models this small, several threads only
    contend (a 2-core machine ran the tiny MLP's backward ~10x slower); restored after."""
    import torch  # noqa: PLC0415
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _locate_or_say_why(run: PortRun) -> dict | None:
    """The locator's finding; if the locator itself fails on this model, the verdict
    stands and the report says why there is no location, instead of an exception."""
    try:
        return _locate(run)
    except Exception as error:                          # noqa: BLE001 (any model the user brings)
        return dict(layer=None, quantity=None, note=f"the locator could not trace this model: {_one_line(error)}")


def _locate(run: PortRun, rtol=None) -> dict | None:
    from parity_tests.engine.locator.locate import locate  # noqa: PLC0415
    return locate(run.port, run.runner, run.side.loss_fn, run.objective.jax, run.x, run.y,
                  run.side.integer, rtol)


def locate_divergence(torch_model, nnx_model, x, y, *, loss="mse", loss_options=None, dtype="float64",
                      name_map=None, convert=None, input_layout=None, rtol=None, output=None) -> dict | None:
    """None when every module's forward output and gradient agree (float64: 1e-10 of the
    tensor's largest entry; float32: 4e-6, see locate.py); else the first that differs:
    layer (torch attribute path), quantity ("output" or "gradient"), max_abs, max_rel
    and, where the module's input already differs while the previous module's output
    agrees, a note that the difference arises between the two. rtol overrides the
    dtype's tolerance (the tests ask for half of it on correct ports)."""
    with _one_torch_thread():
        run = _setup(torch_model, nnx_model, x, y, loss, dtype, "cpu", name_map, convert, input_layout,
                     loss_options=loss_options, output=output)
        return _locate(run, rtol)
