"""Instances of one torch class -> one NNX class that takes their differences as
`__init__` arguments, as the torch class takes them (issue 30).

A module does not keep its constructor's arguments, so they are read back from what
the instances' translations differ in: instances whose code is alike but for numbers
(channel widths, strides) share a class, and each number that differs between them
becomes an argument. Arguments that agree on every instance are one (a block's output
width is conv1's out_channels, bn1's num_features and conv2's in and out channels);
an argument takes the name of the torch `__init__` parameter that alone has its values
on every instance (`inplanes`, `stride`: init_args.py reads them back), else after the
parameter of the layer it reaches (`in_channels`). Each optional child (a ResNet
block's `downsample`, None in most blocks) is a boolean argument (optional.py).
Instances that differ in more than that (other layers, another forward) keep numbered
classes, each with a comment saying so.
"""
from __future__ import annotations

import ast
import inspect
import io
import keyword
import re
import tokenize
from dataclasses import dataclass, field

from jaxport.translate.optional import merge_plan

CHILD = re.compile(r"__child_(\d+)__")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d*)?(?:[eE][-+]?\d+)?")
RESERVED = {"self", "rngs", "dtype", "jax", "jnp", "nnx", "jnn", "torchops", "math", "make_model"}


@dataclass
class Inst:
    """One torch module instance with a class of the file (or an inline nnx.Sequential)."""
    m: object
    init: list[str]                     # __init__ body statements; children as __child_<id>__
    call: list[str]                     # __call__: its def line, then one statement a row
    inline: bool = False                # a Sequential of generated classes: nnx.Sequential(...)
    children: list[int] = field(default_factory=list)
    label: int = -1


def blank(text: str) -> str:
    return _NUMBER.sub("#", text)


def numbers(stmt: str) -> list[tuple[int, int, str]]:
    """(row, col, text) of each number literal of a statement (not in comments)."""
    src = inspect.cleandoc("\n" + stmt) if stmt.startswith(" ") else stmt
    toks = tokenize.generate_tokens(io.StringIO(src + "\n").readline)
    return [(t.start[0], t.start[1], t.string) for t in toks if t.type == tokenize.NUMBER]


# ---- which instances share a class ----------------------------------------------------------
class Unmerged(Exception):
    """render.py could not write one class for a type's merged labels: label it again
    without merging that type's variants (numbered classes, as before)."""

    def __init__(self, type_name: str):
        super().__init__(type_name)
        self.type_name = type_name


def assign_labels(insts: dict[int, Inst], keep_apart=frozenset()):
    """Label the instances (post-order): one label per class of the file. Alike but for
    numbers: one label; a type's labels that differ in optional children: merged
    (unless the type is in `keep_apart`)."""
    canon: dict[int, int] = {}
    keys: dict[tuple, int] = {}             # one label per skeleton, across the rounds

    def find(k):
        while canon.get(k, k) != k:
            k = canon[k]
        return k
    for _ in range(10):
        changed = False
        for i, inst in insts.items():
            text = "\n".join(inst.init + inst.call[1:])
            text = CHILD.sub(lambda mt: f"__label_{insts[int(mt.group(1))].label}__", text)
            sk = (type(inst.m).__name__, inst.inline, inst.call[0], blank(text))   # call[0]: its defaults
            inst.label = find(keys.setdefault(sk, len(keys)))
        by_type: dict[str, dict[int, Inst]] = {}
        for inst in insts.values():
            if not inst.inline and type(inst.m).__qualname__ not in keep_apart:
                by_type.setdefault(type(inst.m).__qualname__, {}).setdefault(inst.label, inst)
        for reps in by_type.values():
            if len(reps) < 2:
                continue
            merged = merge_variants(list(reps.values()), insts)
            if merged:
                full, others = merged
                for o in others:
                    if find(o.label) != find(full.label):
                        canon[find(o.label)] = find(full.label)
                        changed = True
        for inst in insts.values():
            inst.label = find(inst.label)
        if not changed:
            break


def _blank_rows(inst, insts):
    def sub(text):
        return blank(CHILD.sub(lambda mt: f"__label_{insts[int(mt.group(1))].label}__", text))
    return [sub(s) for s in inst.init], inst.call[:1] + [blank(r) for r in inst.call[1:]]


def merge_variants(reps: list[Inst], insts):
    """(full, the others) where every other label of the type is `full` without some of
    its optional children (optional.py); else None."""
    def nones(r):
        return -len(r.init), sum(s.endswith("= None") for s in r.init)
    reps = sorted(reps, key=nones)
    full, others = reps[0], reps[1:]
    f_init, f_call = _blank_rows(full, insts)
    if merge_plan(f_init, f_call, [_blank_rows(o, insts) for o in others]) is None:
        return None
    return full, others


# ---- naming the arguments ---------------------------------------------------------------------
def _callee_params(func: str) -> list[str]:
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    from flax import nnx  # noqa: PLC0415

    from jaxport import nn as jnn  # noqa: PLC0415
    from jaxport.translate import torchops  # noqa: PLC0415
    target = {"jnn": jnn, "torchops": torchops, "nnx": nnx, "jnp": jnp, "jax": jax}
    head, *rest = func.split(".")
    obj = target.get(head)
    try:
        for part in rest:
            obj = getattr(obj, part)
        return list(inspect.signature(obj).parameters) if obj is not None else []
    except (AttributeError, TypeError, ValueError):
        return []


def number_name(stmt: str, row: int, col: int) -> tuple[str, str]:
    """(what the number is: the callee's parameter, where: the attribute or variable)."""
    src = inspect.cleandoc("\n" + stmt) if stmt.startswith(" ") else stmt
    tree = ast.parse(src)
    parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
    node = next((n for n in ast.walk(tree) if isinstance(n, ast.Constant) and (n.lineno, n.col_offset) == (row, col)),
                None)
    what = "arg"
    while node is not None and node in parents:
        p = parents[node]
        if isinstance(p, ast.Call):
            if node in p.args:
                params = [n for n in _callee_params(ast.unparse(p.func)) if n != "self"]
                i = p.args.index(node)
                what = params[i] if i < len(params) and not params[i].startswith("*") else f"arg{i}"
            elif isinstance(node, ast.keyword):
                what = node.arg or "arg"
            break
        node = p
    where = ""
    stmt_node = tree.body[0]
    if isinstance(stmt_node, ast.Assign):
        t = stmt_node.targets[0]
        where = t.attr if isinstance(t, ast.Attribute) else getattr(t, "id", "")
    return what, where


def identifier(name: str) -> str:
    name = re.sub(r"\W", "_", name).strip("_") or "arg"
    name = f"n{name}" if name[0].isdigit() else name
    return name + "_" if name in RESERVED or keyword.iskeyword(name) else name
