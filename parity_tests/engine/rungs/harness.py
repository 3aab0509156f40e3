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
import time

from parity_tests.engine.reports.port_report import PortReport
from parity_tests.engine.rungs import free_runs, port_rungs
from parity_tests.engine.rungs.port_rungs import PortRun
from parity_tests.engine.sides.port_objectives import PortInputError
from parity_tests.engine.sides.port_setup import LossSpec, OptimizerSpec, RunSpec, build_run, one_line

__all__ = ["check_port", "locate_divergence", "PortReport", "PortInputError"]
RUNGS = {**port_rungs.RUNGS, **free_runs.RUNGS}


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
        run = build_run(torch_model, nnx_model, x, y, LossSpec(loss, loss_options, output),
                     OptimizerSpec(optimizer, lr, momentum, weight_decay, nesterov, optimizer_options, schedule,
                                   clip_grad_norm, no_decay),
                     RunSpec(dtype, device, steps, batch_size, dropout, name_map, convert, input_layout))
        # float32: the locator looks in float64 first, where no rounding moves a kink
        # (docs/check-your-own-port.md, "The locator")
        in_float64 = None if dtype != "float32" else (lambda: build_run(
            torch_model, nnx_model, x, y, LossSpec(loss, loss_options, output), OptimizerSpec(),
            RunSpec("float64", device, name_map=name_map, convert=convert, input_layout=input_layout)))
        return run_ladder(run, rungs, keep_going, locate, began, locate_in_float64=in_float64)


def run_ladder(run: PortRun, rungs=tuple(RUNGS), keep_going=False, locate=True, began=None,
               progress=None, locate_in_float64=None) -> PortReport:
    """The rungs over a run's two sides and the report: check_port's, and `compare`'s
    over an example's sides (keep_going, no locator: its sides are jaxport's own).
    progress: fn(rung) called as each rung starts. locate_in_float64: () -> the same
    pair as a float64 run, for a float32 run's locator to search first."""
    began = time.perf_counter() if began is None else began
    for rung in rungs:
        if progress is not None:
            progress(rung)
        RUNGS[rung](run)
        if run.failures and not keep_going:
            break                  # later rungs build on this one; the locator says where
    first = run.failures[0] if run.failures else None
    located = _locate_or_say_why(run, locate_in_float64) if first is not None and locate else None
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


def _locate_or_say_why(run: PortRun, in_float64=None) -> dict | None:
    """The locator's finding; if the locator itself fails on this model, the verdict
    stands and the report says why there is no location, instead of an exception.
    in_float64: a float32 run's pair as a float64 run, searched first. Why: in float32
    a correct port's tensors differ by rounding, and where an activation sits within
    rounding of a kink (ReLU6's 0 after a BatchNorm, in a held-out MobileNetV2) one
    side passes a gradient the other does not; the locator then named that module, 0.2
    of its largest output gradient off, instead of a planted bug's. A bug that shows in
    both precisions is found in float64 alone; one that shows only in float32 (a
    variance as E[x^2] - E[x]^2) is looked for in float32 when float64 finds nothing."""
    if in_float64 is not None:
        try:
            found = _locate(in_float64())
        except Exception:                               # noqa: BLE001 (a model that runs only in float32)
            found = None
        if found and found.get("layer"):
            return dict(found, dtype="float64")
    try:
        found = _locate(run)
        if in_float64 is not None and found and found.get("layer"):
            found = dict(found, note=(found.get("note", "") + "; " if found.get("note") else "")
                         + "only in float32: float64 finds no module that differs, so this may be rounding "
                         "(an activation at a kink) rather than the failure's cause")
        return found
    except Exception as error:                          # noqa: BLE001 (any model the user brings)
        return dict(layer=None, quantity=None, note=f"the locator could not trace this model: {one_line(error)}")


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
        run = build_run(torch_model, nnx_model, x, y, LossSpec(loss, loss_options, output), OptimizerSpec(),
                     RunSpec(dtype, name_map=name_map, convert=convert, input_layout=input_layout))
        return _locate(run, rtol)
