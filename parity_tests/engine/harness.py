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
model. Dropout is compared switched off (the frameworks' random streams differ).
"""
from __future__ import annotations

import contextlib
import time

import numpy as np

from parity_tests.engine.port_free_run import rung6_free_running, rung7_fitted_model
from parity_tests.engine.port_models import torch_arrays
from parity_tests.engine.port_nnx import build_port
from parity_tests.engine.port_objectives import JAX_LOSSES, PortInputError, integer_targets, optimizer_pair, torch_loss
from parity_tests.engine.port_report import PortReport
from parity_tests.engine.port_rungs import (PortRun, batches, rung2_loss_at_init, rung3_gradients_at_init, rung4_one_step,
                         rung5_teacher_forced)

__all__ = ["check_port", "locate_divergence", "PortReport", "PortInputError"]
RUNGS = {2: rung2_loss_at_init, 3: rung3_gradients_at_init, 4: rung4_one_step, 5: rung5_teacher_forced,
         6: rung6_free_running, 7: rung7_fitted_model}


def _data(x, y, loss: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y) or len(x) == 0:
        raise PortInputError(f"x and y need the same number of rows (x {x.shape}, y {y.shape})")
    if integer_targets(loss):
        if not np.issubdtype(y.dtype, np.integer) and not np.all(y == np.round(y)):
            raise PortInputError("cross_entropy needs integer class labels in y")
        y = y.astype(np.int64)
    elif not np.issubdtype(y.dtype, np.floating):
        y = y.astype(np.float64)
    return x, y


def _setup(torch_model, nnx_model, x, y, loss, dtype, device, name_map, convert, input_layout,
           optimizer="adam", lr=1e-2, steps=1, batch_size=1, momentum=0.9, weight_decay=1e-2) -> PortRun:
    if device != "cpu":
        raise PortInputError(f"device {device!r}: the harness runs on cpu only")
    import torch  # noqa: PLC0415
    from flax import nnx  # noqa: PLC0415
    if not isinstance(torch_model, torch.nn.Module):
        raise PortInputError(f"the torch model is a {type(torch_model).__name__}, not a torch.nn.Module")
    if not isinstance(nnx_model, nnx.Module):
        raise PortInputError(f"the NNX model is a {type(nnx_model).__name__}, not an nnx.Module")
    torch_loss(loss)                                        # an unknown loss is exit 2, before any work
    x, y = _data(x, y, loss)
    if steps < 1 or batch_size < 1:
        raise PortInputError("steps and batch_size must be positive")
    pair = optimizer_pair(optimizer, lr, momentum, weight_decay)
    port = build_port(torch_model, nnx_model, dtype, name_map, convert, input_layout)
    from parity_tests.engine.port_nnx import NnxRunner  # noqa: PLC0415
    from parity_tests.engine.port_torch import TorchSide  # noqa: PLC0415
    side = TorchSide(port, torch_loss(loss), pair.torch, integer_targets(loss))
    runner = NnxRunner(port, JAX_LOSSES[loss], pair.optax, pair.kind)
    _check_shapes(side, runner, port, x, y, loss)
    label = f"{type(torch_model).__name__} / {type(nnx_model).__name__}"
    return PortRun(port, side, runner, x, y, batches(len(x), batch_size, steps), label, loss,
                   settings=dict(model=label, dtype=dtype, loss=loss, optimizer=pair.label, steps=steps,
                                 batch_size=batch_size, rows=len(x), device=device))


def _check_shapes(side, runner, port, x, y, loss) -> None:
    """The model's output must fit y (a broadcast (N, 1) against (N,) would be silently
    wrong in both frameworks; a class label out of range is torch's IndexError)."""
    try:
        out = side.predict(torch_arrays(port.torch_model), x[:2])
    except Exception as error:                              # noqa: BLE001 (the user's model)
        raise PortInputError(f"the torch model cannot take x[:2] of shape {x[:2].shape}: {error}") from None
    if integer_targets(loss):
        if out.ndim != y.ndim + 1 or out.shape[2:] != y.shape[1:]:
            raise PortInputError(f"cross_entropy needs (N, classes) outputs for (N,) labels: output per row "
                                 f"{out.shape[1:]}, y's {y.shape[1:]}")
        if y.min() < 0 or y.max() >= out.shape[1]:
            raise PortInputError(f"class labels in y run {y.min()}..{y.max()}, the model has {out.shape[1]} classes")
    elif out.shape[1:] != y.shape[1:]:
        raise PortInputError(f"the model's output per row is {out.shape[1:]}, y's is {y.shape[1:]} (loss {loss})")
    try:
        runner.output_shape(x[:2])
    except Exception as error:                              # noqa: BLE001
        raise PortInputError(f"the NNX model cannot take x[:2] (layout {port.input_layout or 'as given'}): "
                             f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from None


def check_port(torch_model, nnx_model, x, y, *, loss="mse", optimizer="adam", lr=1e-2, steps=100,
               batch_size=32, dtype="float64", device="cpu", name_map=None, convert=None, input_layout=None,
               momentum=0.9, weight_decay=1e-2, rungs=tuple(RUNGS), keep_going=False, locate=True) -> PortReport:
    """The ladder for one port. name_map: {torch layer path: NNX path} where the names
    differ; convert: {torch layer path: LayerKind, or fn(torch arrays) -> {NNX relative
    path: array}} for layers the converter does not know (or converts wrongly for you);
    input_layout "nhwc": the NNX model takes torch's NCHW x transposed to NHWC.
    optimizer: "sgd" (momentum), "adam", "adamw" (weight_decay, decoupled) or a
    (torch factory, optax transformation) pair. keep_going: run the rungs after the
    first failing one too (by default they are skipped: each builds on the ones before).
    locate: on a failure, also run locate_divergence's search (report.located)."""
    began = time.perf_counter()
    with _one_torch_thread():
        run = _setup(torch_model, nnx_model, x, y, loss, dtype, device, name_map, convert, input_layout,
                     optimizer, lr, steps, batch_size, momentum, weight_decay)
        for rung in rungs:
            RUNGS[rung](run)
            if run.failures and not keep_going:
                break                  # later rungs build on this one; the locator says where
        first = run.failures[0] if run.failures else None
        located = _locate(run) if first is not None and locate else None
    if first is not None:
        if located and (first.get("layer") is None or first["rung"] in (2, 3)):
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


def _locate(run: PortRun, rtol=None) -> dict | None:
    from parity_tests.engine.locate import locate  # noqa: PLC0415
    return locate(run.port, run.runner, run.side.loss_fn, JAX_LOSSES[run.loss_name], run.x, run.y,
                  run.side.integer, rtol)


def locate_divergence(torch_model, nnx_model, x, y, *, loss="mse", dtype="float64", name_map=None,
                      convert=None, input_layout=None, rtol=None) -> dict | None:
    """None when every module's forward output and gradient agree (float64: 1e-10 of the
    tensor's largest entry; float32: 4e-6, see locate.py); else the first that differs:
    layer (torch attribute path), quantity ("output" or "gradient"), max_abs, max_rel
    and, where the module's input already differs while the previous module's output
    agrees, a note that the difference arises between the two. rtol overrides the
    dtype's tolerance (the tests ask for half of it on correct ports)."""
    with _one_torch_thread():
        run = _setup(torch_model, nnx_model, x, y, loss, dtype, "cpu", name_map, convert, input_layout)
        return _locate(run, rtol)
