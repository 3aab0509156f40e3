"""The `--data` .npz of both commands (`python -m parity_tests check`, `python -m
jaxport.translate`), read into check_port's (x, y): one loader, so that the two take the
same files and refuse the same bad ones with the same one-line PortInputError (exit 2).

The file holds `y` and the model's inputs, each with the rows on axis 0: `x` alone for a
model of one input (passed positionally, whatever forward calls it), or else one array per
input named as forward's parameter (`input_ids`, `attention_mask`), passed to both sides
as keywords (check_port's dict x).
"""
from __future__ import annotations

import inspect
import zipfile

import numpy as np

from parity_tests.engine.sides.port_objectives import PortInputError, refused


def load_arrays(path: str) -> dict:
    """{name: array} of the .npz; an unreadable file is a PortInputError."""
    with refused(lambda error: f"cannot read {path}: {error}", (OSError, ValueError, zipfile.BadZipFile)):
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}


def _forward_parameters(torch_model) -> dict:
    """forward's parameters that an array can fill, by name; none where there is no
    forward to read (a factory that returned something else: check_port names that)."""
    try:
        params = inspect.signature(torch_model.forward).parameters
    except (AttributeError, TypeError, ValueError):
        return {}
    return {n: p for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def inputs_of(torch_model, arrays: dict, path: str):
    """(x, y) for check_port from the .npz's arrays: x an array (`x` alone: the one
    input) or a dict {forward's parameter: array} (keywords). Each input is checked
    against forward's signature and every array's rows against y's."""
    if "y" not in arrays:
        raise PortInputError(f"{path}: no array named y (has {', '.join(arrays) or 'none'})")
    y, given = arrays["y"], {k: v for k, v in arrays.items() if k != "y"}
    params = _forward_parameters(torch_model)
    required = [n for n, p in params.items() if p.default is inspect.Parameter.empty]
    signature = f"forward({', '.join(params)})"
    if not given:
        raise PortInputError(f"{path}: no input array: name it x (one input) or as {signature}'s parameters")
    if list(given) == ["x"]:
        if len(required) > 1:
            raise PortInputError(f"{path}: {signature} takes {len(required)} inputs and the file has x only: "
                                 "name the arrays as forward's parameters")
    else:                                           # named as forward's parameters: keywords
        unknown = [k for k in given if k not in params]
        if unknown:
            raise PortInputError(f"{path}: array {', '.join(unknown)} is not a parameter of {signature} "
                                 "(name the arrays as forward's parameters, or give one input as x)")
        missing = [n for n in required if n not in given]
        if missing:
            raise PortInputError(f"{path}: no array for {', '.join(missing)}, which {signature} needs "
                                 f"(has {', '.join(arrays)})")
    if np.ndim(y) == 0:
        raise PortInputError(f"{path}: y is a scalar: it needs one row per input row on axis 0")
    for name, a in given.items():
        if np.ndim(a) == 0 or len(a) != len(y):
            have = "no rows (a scalar)" if np.ndim(a) == 0 else f"{len(a)} rows"
            raise PortInputError(f"{path}: input {name} has {have} and y has {len(y)}: every array needs "
                                 "the same rows on axis 0")
    return (given["x"] if list(given) == ["x"] else given), y
