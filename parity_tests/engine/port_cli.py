"""`python -m parity_tests check module:TorchFactory module:NnxFactory --data file.npz`:
the port harness as a CI gate. Each factory is called with no arguments and returns a
model (a class with default arguments works). The .npz holds y and the inputs: x alone
(one input, passed positionally), or one array per parameter of the torch model's
forward (`input_ids`, `attention_mask`), passed to both sides as keywords
(parity_tests/engine/port_data.py, shared with `python -m jaxport.translate`).

Exit status: 0 the port agrees on every rung, 1 it differs (the report names the first
failure and where it starts), 2 bad input (one line on stderr, no traceback).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from parity_tests.engine.port_data import inputs_of, load_arrays
from parity_tests.engine.sides.port_losses import LOSSES
from parity_tests.engine.sides.port_objectives import SPECS, PortInputError, refused


# the options that reach check_port as they are, under the same names
PASSED = ("loss", "optimizer", "lr", "momentum", "nesterov", "weight_decay", "optimizer_options", "schedule", "steps",
          "batch_size", "dtype", "input_layout", "keep_going")


class _Parser(argparse.ArgumentParser):
    def error(self, message):                      # argparse's usage errors are exit 2 too
        raise PortInputError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m parity_tests", description="Check a torch -> Flax NNX port rung by rung.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    c = sub.add_parser("check", help="run the parity ladder on your port")
    c.add_argument("torch_factory", help="module:callable returning the torch.nn.Module")
    c.add_argument("nnx_factory", help="module:callable returning the nnx.Module")
    c.add_argument("--data", required=True, help=".npz with y and the inputs: x alone, or one array per "
                   "parameter of forward (passed as keywords)")
    c.add_argument("--loss", default="mse", choices=LOSSES)
    c.add_argument("--label-smoothing", type=float, help="cross_entropy's label_smoothing (torch's default 0)")
    c.add_argument("--ignore-index", type=int, help="cross_entropy's / nll_loss's ignore_index (torch's default -100)")
    c.add_argument("--optimizer", default="adam", choices=tuple(SPECS))
    c.add_argument("--lr", type=float, help="learning rate (torch's default: 1.0 for adadelta, else 0.01)")
    c.add_argument("--momentum", type=float, help="sgd (default 0.9) or rmsprop (default 0) momentum")
    c.add_argument("--nesterov", action="store_true", help="sgd's Nesterov momentum")
    c.add_argument("--weight-decay", type=float, help="torch's weight_decay (adamw: decoupled, default 0.01)")
    c.add_argument("--optimizer-options", type=_options, default={}, metavar="K=V,...",
                   help="other torch keywords, e.g. alpha=0.9,eps=1e-6 (rmsprop) or rho=0.95 (adadelta)")
    c.add_argument("--schedule", type=_schedule, metavar="KIND:K=V,...",
                   help="lr schedule stepped per optimizer step: step:step_size=10,gamma=0.5 or cosine:T_max=100")
    c.add_argument("--steps", type=int, default=100)
    c.add_argument("--batch-size", type=int, default=32)
    c.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    c.add_argument("--input-layout", choices=("nchw", "nhwc"), help="nhwc: the NNX model takes x transposed NCHW -> NHWC")
    c.add_argument("--keep-going", action="store_true", help="run every rung even after one fails")
    c.add_argument("--report", help="also write the markdown report to this file")
    return p


def _value(text: str):
    """A number (int where it is one) or a word."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _options(text: str) -> dict:
    pairs = [p.partition("=") for p in text.split(",") if p]
    if any(not k or not eq or not v for k, eq, v in pairs):
        raise PortInputError(f"{text!r}: expected key=value pairs separated by commas")
    return {k.strip(): _value(v.strip()) for k, _, v in pairs}


def _schedule(text: str) -> dict:
    kind, _, rest = text.partition(":")
    return {"kind": kind, **_options(rest)}


def load_factory(spec: str):
    """'package.module:Name' -> the callable; a bad spec is a PortInputError."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise PortInputError(f"{spec!r}: expected module:callable")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))        # as `python -m` users expect: their cwd's modules
    with refused(lambda error: f"cannot import {module_name!r}: {error}", ImportError):
        module = importlib.import_module(module_name)
    target = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise PortInputError(f"module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise PortInputError(f"{spec!r} is not callable")
    return target


def _build(factory, side: str):
    try:
        return factory()
    except Exception as error:                      # noqa: BLE001 (the user's code)
        raise PortInputError(f"the {side} factory raised {type(error).__name__}: {error}") from None


def main(argv=None) -> int:
    try:
        args = _parser().parse_args(argv)
        torch_factory, nnx_factory = load_factory(args.torch_factory), load_factory(args.nnx_factory)
        arrays = load_arrays(args.data)
        torch_model = _build(torch_factory, "torch")
        x, y = inputs_of(torch_model, arrays, args.data)      # forward's signature says how x reaches it
        from parity_tests.engine.rungs.harness import check_port         # noqa: PLC0415 (jax and torch load here)
        loss_options = {k: getattr(args, k) for k in ("label_smoothing", "ignore_index")
                        if getattr(args, k) is not None}
        report = check_port(torch_model, _build(nnx_factory, "NNX"), x, y, loss_options=loss_options,
                            **{k: getattr(args, k) for k in PASSED})
    except PortInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    text = report.markdown()
    print(text)
    if args.report:
        Path(args.report).write_text(text + "\n")
    f = report.first_failure
    print("parity: agree" if report.passed else
          f"parity: DIFFER at rung {f['rung']} ({f['rung_name']}), {f['quantity']}"
          + (f", layer {f['layer']}" if f.get("layer") else ""), file=sys.stderr)
    return 0 if report.passed else 1
