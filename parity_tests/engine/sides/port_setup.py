"""check_port's run from what the caller passes: the loss, the optimizer and the run as
three specs, checked (bad input is a PortInputError, exit 2, before any work), and the
two sides built from them (port_torch.TorchSide, port_candidate.PortCandidate).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from parity_tests.engine.rungs.port_rungs import PortRun, batches
from parity_tests.engine.sides.port_candidate import PortCandidate
from parity_tests.engine.sides.port_clip import with_clipping
from parity_tests.engine.sides.port_groups import with_groups
from parity_tests.engine.sides.port_losses import Objective, check_targets, objective
from parity_tests.engine.sides.port_models import torch_arrays
from parity_tests.engine.sides.port_nnx import NnxRunner, build_port
from parity_tests.engine.sides.port_objectives import PortInputError, optimizer_pair, refused
from parity_tests.engine.sides.port_torch import TorchSide
from parity_tests.engine.sides.pytrees import Inputs, as_inputs, leaves, select, view


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
    def one_array(out):
        if output is None and len(leaves(out)) > 1:
            raise PortInputError(f"the model returns {len(leaves(out))} arrays and the loss {obj.name} takes one: "
                                 "pass output= (an index, key or attribute) to pick it, or a loss pair")
        return view(out, output)
    pick = (lambda out: select(out, output)) if obj.name == "custom" else one_array
    return dataclasses.replace(obj, torch=lambda out, y: obj.torch(pick(out), y),
                               jax=lambda out, y: obj.jax(pick(out), y))


@dataclass(frozen=True)
class LossSpec:
    """The loss, as check_port takes it: a name or a (torch, JAX) pair, torch's keyword
    options, and the output leaf it takes."""
    loss: object = "mse"
    options: dict | None = None
    output: object = None


@dataclass(frozen=True)
class OptimizerSpec:
    """The optimizer on both sides: a name (torch's keywords) or a pair, its schedule,
    clipping and parameter groups."""
    optimizer: object = "adam"
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    nesterov: bool = False
    options: dict | None = None
    schedule: dict | None = None
    clip_grad_norm: float | None = None
    no_decay: object = None


@dataclass(frozen=True)
class RunSpec:
    """How the two models are paired and run: the dtype and device, the batches, the
    hash-mask dropout, and how NNX's names, layers and layout meet torch's."""
    dtype: str = "float64"
    device: str = "cpu"
    steps: int = 1
    batch_size: int = 1
    dropout: bool = False
    name_map: dict | None = None
    convert: dict | None = None
    input_layout: str | None = None


def build_run(torch_model, nnx_model, x, y, loss: LossSpec, opt: OptimizerSpec, spec: RunSpec) -> PortRun:
    """The run's two sides (TorchSide, PortCandidate) from the model pair and the specs,
    every input checked first: bad input is a PortInputError (exit 2), before any work."""
    if spec.device != "cpu":
        raise PortInputError(f"device {spec.device!r}: the harness runs on cpu only")
    import torch  # noqa: PLC0415
    from flax import nnx  # noqa: PLC0415
    if not isinstance(torch_model, torch.nn.Module):
        raise PortInputError(f"the torch model is a {type(torch_model).__name__}, not a torch.nn.Module")
    if not isinstance(nnx_model, nnx.Module):
        raise PortInputError(f"the NNX model is a {type(nnx_model).__name__}, not an nnx.Module")
    obj = _on_output(objective(loss.loss, loss.options), loss.output)
    x, y = _data(x, y, obj)
    if spec.steps < 1 or spec.batch_size < 1:
        raise PortInputError("steps and batch_size must be positive")
    pair = optimizer_pair(opt.optimizer, opt.lr, opt.momentum, opt.weight_decay, opt.nesterov, opt.options,
                          opt.schedule, spec.steps)
    if opt.clip_grad_norm is not None:
        pair = with_clipping(pair, opt.clip_grad_norm)
    port = build_port(torch_model, nnx_model, spec, loss.output)
    if opt.no_decay is not None:               # param groups need the port's torch -> NNX map
        pair = with_groups(pair, port, opt.no_decay, opt.optimizer, opt.weight_decay, opt.options)
    side = TorchSide(port.torch_model, spec.dtype, obj.torch, pair.torch, obj.integer, port.output, port.dropout)
    runner = NnxRunner(port, obj.jax, pair.optax, pair.kind)
    _check_shapes(side, runner, port, x, y, obj)
    label = f"{type(torch_model).__name__} / {type(nnx_model).__name__}"
    return PortRun(side, PortCandidate(port, runner), x, y, batches(len(x), spec.batch_size, spec.steps), label,
                   obj.name, objective=obj, port=port, runner=runner,
                   settings=dict(model=label, dtype=spec.dtype, loss=obj.label, optimizer=pair.label,
                                 steps=spec.steps, batch_size=spec.batch_size, rows=len(x), device=spec.device))


def one_line(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def _check_shapes(side, runner, port, x, y, obj: Objective) -> None:
    """The model's output must fit y (a broadcast (N, 1) against (N,) would be silently
    wrong in both frameworks; a class label out of range is torch's IndexError), both
    models' outputs must have one shape, and each side's loss must take them and give
    a scalar: else a bad-input error here, not a raw exception inside a rung."""
    with refused(lambda error: f"the torch model cannot take x[:2] of shape {x[:2].shape}: {error}"):
        out = side.predict(torch_arrays(port.torch_model), x[:2])
    check_targets(obj, out.shape, y)
    if obj.name not in ("custom", "cross_entropy", "nll_loss") and out.shape[1:] != y.shape[1:]:
        raise PortInputError(f"the model's output per row is {out.shape[1:]}, y's is {y.shape[1:]} (loss {obj.name})")
    try:
        nnx_shape = tuple(runner.output_shape(x[:2]))
    except Exception as error:                              # noqa: BLE001
        raise PortInputError(f"the NNX model cannot take x[:2] (layout {port.input_layout or 'as given'}): "
                             f"{one_line(error)}") from None
    if port.output_in_torch_layout(np.broadcast_to(0.0, nnx_shape)).shape != out.shape:   # NHWC compares as NCHW
        raise PortInputError(f"the NNX model's output has shape {nnx_shape} on x[:2], torch's {out.shape}")
    with refused(lambda error: f"the loss {obj.label} cannot take the outputs {out.shape} and y[:2] {y[:2].shape}: "
                               f"{one_line(error)}"):
        t = side.loss(side.model().eval(), x[:2], y[:2])
        j = runner.loss_shape(x[:2], y[:2])
    if t.ndim or j:
        raise PortInputError(f"the loss must be a scalar: torch's has shape {tuple(t.shape)}, JAX's {j}")
