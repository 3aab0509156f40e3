"""`python -m jaxport.translate pkg.mod:Factory --data data.npz --out port.py [options]`:
write the NNX twin of the torch model the factory returns, then run check_port on the
pair in float32 and float64 and print the verdicts.

Exit status: 0 both dtypes agree; 1 a dtype differs (a translator bug: the report names
the rung and layer); 2 bad input or something it cannot translate, as one line on
stderr naming it, its source line and what to write by hand, with no traceback and no
output file. The options after --out are check_port's, as `python -m parity_tests
check` takes them (no --dtype: both run; no --input-layout: the twin takes NCHW).

The .npz is `python -m parity_tests check`'s (parity_tests/engine/port_data.py): `y`
and `x` alone (one input, positional) or one array per forward parameter (keywords).
Rows 0-1 of each input are the trace's example.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

from parity_tests.engine.port_cli import load_factory
from parity_tests.engine.port_data import inputs_of, load_arrays
from parity_tests.engine.sides.port_losses import LOSSES
from parity_tests.engine.sides.port_objectives import SPECS, PortInputError

from jaxport.translate.trace import BadExample, Untranslatable

DTYPES = ("float32", "float64")


class _Parser(argparse.ArgumentParser):
    def error(self, message):                       # usage errors are exit 2 too, one line
        raise PortInputError(message)


def _options(text: str) -> dict:
    pairs = [p.partition("=") for p in text.split(",") if p]
    if any(not k or not eq or not v for k, eq, v in pairs):
        raise PortInputError(f"{text!r}: expected key=value pairs separated by commas")
    out = {}
    for k, _, v in pairs:
        for kind in (int, float, str):
            try:
                out[k.strip()] = kind(v.strip())
                break
            except ValueError:
                pass
    return out


def _schedule(text: str) -> dict:
    kind, _, rest = text.partition(":")
    return {"kind": kind, **_options(rest)}


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m jaxport.translate", description="Write the Flax NNX twin of a torch model "
                "and check it with check_port in float32 and float64.")
    p.add_argument("torch_factory", help="module:callable returning the torch.nn.Module")
    p.add_argument("--data", required=True, help=".npz with y and the inputs: x alone, or one array per input "
                   "named as forward's parameter (passed as keywords); rows 0-1 are the trace's example")
    p.add_argument("--out", required=True, help="where to write the generated module")
    p.add_argument("--loss", default="mse", choices=LOSSES)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--ignore-index", type=int)
    p.add_argument("--optimizer", default="adam", choices=tuple(SPECS))
    p.add_argument("--lr", type=float)
    p.add_argument("--momentum", type=float)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--optimizer-options", type=_options, default={}, metavar="K=V,...")
    p.add_argument("--schedule", type=_schedule, metavar="KIND:K=V,...")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--keep-going", action="store_true")
    p.add_argument("--no-check", action="store_true", help="write the module only")
    return p


def _write(path: str, text: str):
    """Atomically: a reader never sees half a file, and a failure leaves none."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def load_generated(path: str):
    spec = importlib.util.spec_from_file_location(f"_translated_{abs(hash(os.path.abspath(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    try:
        args = parser().parse_args(argv)
        factory = load_factory(args.torch_factory)
        arrays = load_arrays(args.data)
        if not Path(args.out).parent.exists():
            raise PortInputError(f"--out {args.out}: no such folder")
        try:
            torch_model = factory()
        except Exception as error:                  # noqa: BLE001 (the user's code)
            raise PortInputError(f"the torch factory raised {type(error).__name__}: {error}") from None
        x, y = inputs_of(torch_model, arrays, args.data)
        if len(y) < 2:
            raise PortInputError(f"{args.data}: {len(y)} row(s): the trace needs 2 and check_port a batch")
        from jaxport.translate import translate  # noqa: PLC0415
        example = {k: a[:2] for k, a in x.items()} if isinstance(x, dict) else (x[:2],)
        source = translate(torch_model, example, source_name=args.torch_factory)
    except PortInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Untranslatable as error:
        print(f"error: cannot translate {error}", file=sys.stderr)
        return 2
    except BadExample as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    _write(args.out, source)
    print(f"wrote {args.out}")
    if args.no_check:
        return 0
    from parity_tests.harness import check_port  # noqa: PLC0415
    generated = load_generated(args.out)
    loss_options = {k: v for k, v in dict(label_smoothing=args.label_smoothing,
                                          ignore_index=args.ignore_index).items() if v is not None}
    verdicts = {}
    for dtype in DTYPES:
        try:
            report = check_port(torch_model, generated.make_model(), x, y, loss=args.loss, loss_options=loss_options,
                                optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
                                nesterov=args.nesterov, weight_decay=args.weight_decay,
                                optimizer_options=args.optimizer_options, schedule=args.schedule,
                                steps=args.steps, batch_size=args.batch_size, dtype=dtype,
                                keep_going=args.keep_going)
        except PortInputError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"## {dtype}\n\n{report.markdown()}\n")
        f = report.first_failure
        verdicts[dtype] = "agree" if report.passed else (
            f"DIFFER at rung {f['rung']} ({f['rung_name']}), {f['quantity']}"
            + (f", layer {f['layer']}" if f.get("layer") else ""))
    for dtype, verdict in verdicts.items():
        print(f"translate {dtype}: {verdict}")
    return 0 if all(v == "agree" for v in verdicts.values()) else 1
