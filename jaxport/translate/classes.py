"""Instances of one torch class -> one NNX class that takes their differences as
`__init__` arguments, as the torch class takes them (issue 30).

A module does not keep its constructor's arguments, so they are read back from what
the instances' translations differ in: instances whose code is alike but for numbers
(channel widths, strides) share a class, and each number that differs between them
becomes an argument. Arguments that agree on every instance are one (a block's output
width is conv1's out_channels, bn1's num_features and conv2's in and out channels);
an argument takes the name of the torch `__init__` parameter that alone has its values
on every instance (`inplanes`, `stride`: init_args.py reads them back), else after the
parameter of the layer it reaches (`in_channels`). An optional child (a ResNet block's `downsample`, None in most
blocks) is a boolean argument: the class builds it only when asked, and its forward
runs the child's lines under `if self.downsample is not None:` with torch's
identity (`else: downsample = x`). Instances that differ in more than that (other
layers, another forward) keep numbered classes, each with a comment saying so.
"""
from __future__ import annotations

import ast
import difflib
import inspect
import io
import keyword
import re
import tokenize
from dataclasses import dataclass, field

CHILD = re.compile(r"__child_(\d+)__")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d*)?(?:[eE][-+]?\d+)?")
_TOKEN = re.compile(r"[A-Za-z_]\w*|\S")
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
def optional_attr(full: list[str], other: list[str]) -> str | None:
    """The one child attribute that `full`'s __init__ builds and `other`'s leaves None
    (`self.a = None`, or no line: torch's plain `self.a = None`), all else alike; or None."""
    i = optional_index(full, other)
    return None if i is None else re.match(r"self\.(\w+) = ", full[i]).group(1)


def optional_index(full: list[str], other: list[str]) -> int | None:
    """The index of that statement in `full`."""
    if len(full) == len(other):
        diff = [k for k, (f, o) in enumerate(zip(full, other)) if f != o]
        if len(diff) != 1:
            return None
        k = diff[0]
        m = re.fullmatch(r"self\.(\w+) = None", other[k])
    elif len(full) == len(other) + 1:
        k = next((k for k in range(len(other)) if full[k] != other[k]), len(other))
        if full[k + 1:] != other[k:]:
            return None
        m = re.match(r"self\.(\w+) = ", full[k])
    else:
        return None
    ok = m and full[k].startswith(f"self.{m.group(1)} = ") and not full[k].endswith("= None")
    return k if ok else None


def guard_plan(full: list[str], other: list[str], attr: str):
    """How `full`'s __call__ rows become one forward for both: [("row", i) | ("guard", [i...],
    [(u, w)...])], plus {full row: other row}; None where the difference is more than
    `full`'s rows of the optional child (and the value that stands in for them)."""
    plan, rows, subs = [], {}, []
    ops = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, full, other, autojunk=False).get_opcodes():
        extra = (i2 - i1) - (j2 - j1)
        if tag == "replace" and extra > 0:         # full's own rows first, then rows that differ by a name
            ops += [("delete", i1, i1 + extra, j1, j1), ("replace", i1 + extra, i2, j1, j2)]
        else:
            ops.append((tag, i1, i2, j1, j2))
    for tag, i1, i2, j1, j2 in ops:
        if tag == "insert" or (tag == "replace" and i2 - i1 != j2 - j1):
            return None
        if tag == "delete":
            plan.append(("guard", list(range(i1, i2)), []))
            continue
        for i, j in zip(range(i1, i2), range(j1, j2)):
            rows[i] = j
            plan.append(("row", i))
            if tag == "replace":
                a, b = _TOKEN.findall(full[i]), _TOKEN.findall(other[j])
                d = [k for k in range(min(len(a), len(b))) if a[k] != b[k]]
                if len(a) != len(b) or len(d) != 1 or d[0] == 0 or not (a[d[0]] + b[d[0]]).isidentifier():
                    return None
                subs.append((a[d[0]], b[d[0]]))
    guards = [p for p in plan if p[0] == "guard"]
    if not guards or not any(f"self.{attr}" in full[i] for g in guards for i in g[1]):
        return None
    for u, w in subs:                       # u is made under a guard; w exists before it
        g = next((g for g in guards if any(full[i].lstrip().startswith(f"{u} = ") for i in g[1])), None)
        if g is None:
            return None
        first = min(g[1])
        made_before = any(full[i].lstrip().startswith(f"{w} = ") for i in range(1, first))
        if not made_before and not re.search(rf"[(, ]{w}\b", full[0]):
            return None
        g[2].append((u, w))
    return plan, rows


class Unmerged(Exception):
    """render.py could not write one class for a type's merged labels: label it again
    without merging that type's variants (numbered classes, as before)."""

    def __init__(self, type_name: str):
        super().__init__(type_name)
        self.type_name = type_name


def assign_labels(insts: dict[int, Inst], keep_apart=frozenset()):
    """Label the instances (post-order): one label per class of the file. Alike but for
    numbers: one label; a type's labels that differ by one optional child: merged
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
                full, others, _attr = merged
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
    """(full, the others, attr) where every other label of the type is `full` without one
    optional child `attr` (the same one for all); else None."""
    def nones(r):
        return -len(r.init), sum(s.endswith("= None") for s in r.init)
    reps = sorted(reps, key=nones)
    full, others, attr = reps[0], reps[1:], None
    f_init, f_call = _blank_rows(full, insts)
    for o in others:
        o_init, o_call = _blank_rows(o, insts)
        a = optional_attr(f_init, o_init)
        if a is None or attr not in (None, a) or guard_plan(f_call, o_call, a) is None:
            return None
        attr = a
    return full, others, attr


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
