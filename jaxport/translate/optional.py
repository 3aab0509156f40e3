"""Optional children (issue 30): instances of one torch class that differ only in which
children they build (a ResNet block's `downsample`, None in most blocks; a block with
an optional `gate` and an optional `skip`) share one NNX class.

Each optional child is a boolean `__init__` argument; the class builds the child only
when asked, and `__call__` runs the child's rows under `if self.<child> is not None:`,
with an `else:` that gives the names later rows read torch's stand-in (`downsample =
x`, torch's identity). The class's code is that of the `full` instance, which builds
every optional child any other instance builds; the rows of its `__call__` that an
instance lacks are each one child's (the row that calls it, or rows computed from
those). The merged forward is replayed for every instance with its own children and
must give that instance's rows, else the type keeps numbered classes.
"""
from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass, field

_TOKEN = re.compile(r"[A-Za-z_]\w*|\S")
_NAME = re.compile(r"(?<![\w.])[A-Za-z_]\w*")       # a variable, not an attribute after a dot
MAX_STAND_IN_CHOICES = 64


@dataclass
class Variant:
    """One instance against the full one."""
    absent: list[str]                   # the optional children it leaves None
    init_map: dict[int, int]            # full's __init__ statement -> its statement
    row_map: dict[int, int] = field(default_factory=dict)      # full's __call__ row -> its row


@dataclass
class Merge:
    attrs: list[str]                    # the optional children, in full's __init__ order
    plan: list                          # [("row", i) | ("guard", attr, [rows], [(name, stand-in)])]
    variants: list[Variant]             # one per other instance, in the order given


def optional_children(full: list[str], other: list[str]) -> Variant | None:
    """The children that `full`'s __init__ builds and `other`'s leaves None (`self.a =
    None`, or no statement: torch's plain `self.a = None`), all else alike; or None."""
    absent, init_map, j = [], {}, 0
    for k, stmt in enumerate(full):
        if j < len(other) and other[j] == stmt:
            init_map[k], j = j, j + 1
            continue
        m = re.match(r"self\.(\w+) = ", stmt)
        if not m or stmt.endswith("= None"):
            return None
        if j < len(other) and other[j] == f"self.{m.group(1)} = None":
            j += 1
        absent.append(m.group(1))
    return Variant(absent, init_map) if j == len(other) else None


def _call_diff(full: list[str], other: list[str]):
    """(full's rows `other` lacks, {full row: other row}, [(name, stand-in)]), where the
    rows both have differ only in the names they read (`add = bn2 + downsample` / `+ x`);
    or None."""
    ops, deleted, rows, subs = [], [], {}, []
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
            deleted += range(i1, i2)
            continue
        for i, j in zip(range(i1, i2), range(j1, j2)):
            rows[i] = j
            if tag == "replace":
                a, b = _TOKEN.findall(full[i]), _TOKEN.findall(other[j])
                d = [k for k in range(min(len(a), len(b))) if a[k] != b[k]]
                if len(a) != len(b) or d[0] == 0 or not all((a[k] + b[k]).isidentifier() for k in d):
                    return None
                subs += [(a[k], b[k]) for k in d]
    return deleted, rows, subs


def _target(row: str) -> str:
    return row.split(" = ", 1)[0].strip() if " = " in row else ""


def _owners(call: list[str], rows: set[int], attrs: list[str]) -> dict[int, str] | None:
    """{row: the optional child it belongs to}: the row calls the child, or reads a name
    a row of the child made; None where a row belongs to none or to two."""
    owner, made = {}, {}
    for i in sorted(rows):
        code = call[i].split("  # ")[0]
        expr = code.split(" = ", 1)[-1]
        own = {a for a in attrs if re.search(rf"\bself\.{a}\b", expr)} | {
            made[n] for n in _NAME.findall(expr) if n in made}
        if len(own) != 1:
            return None
        owner[i] = made[_target(code)] = own.pop()
    return owner


def _replay(call: list[str], plan: list, absent: list[str]) -> list[str]:
    """The rows the merged forward runs for an instance without `absent`, each else
    branch's stand-ins written into the rows after it (comments dropped)."""
    alias, out = {}, []
    for step in plan:
        if step[0] == "guard" and step[1] in absent:
            alias.update({u: alias.get(w, w) for u, w in step[3]})
            continue
        for i in ([step[1]] if step[0] == "row" else step[2]):
            out.append(_NAME.sub(lambda m: alias.get(m.group(0), m.group(0)), call[i].split("  # ")[0]))
            alias.pop(_target(call[i]), None)
    return out


def merge_plan(full_init: list[str], full_call: list[str], others: list[tuple[list[str], list[str]]]):
    """One forward for `full` and every (init, call) of `others` (rows with their numbers
    blanked): a Merge, or None where they differ in more than optional children."""
    variants, diffs = [], []
    for o_init, o_call in others:
        v = optional_children(full_init, o_init)
        d = v and _call_diff(full_call, o_call)
        if not d:
            return None
        v.row_map = d[1]
        variants.append(v)
        diffs.append(d)
    absent = {a for v in variants for a in v.absent}
    attrs = list(dict.fromkeys(m.group(1) for m in (re.match(r"self\.(\w+) = ", s) for s in full_init)
                               if m and m.group(1) in absent))
    owner = _owners(full_call, {i for d in diffs for i in d[0]}, attrs)
    if owner is None or any(sorted(d[0]) != sorted(i for i, a in owner.items() if a in v.absent)
                            for v, d in zip(variants, diffs)):
        return None
    plan = []
    for i in range(len(full_call)):
        if i not in owner:
            plan.append(("row", i))
        elif plan and plan[-1][0] == "guard" and plan[-1][1] == owner[i]:
            plan[-1][2].append(i)
        else:
            plan.append(("guard", owner[i], [i], []))
    choices = _stand_ins(full_call, plan, variants, diffs)
    if choices is None:
        return None
    # An instance without two children shows the two stand-ins composed (`mul = fc` where
    # the one without the second alone shows `mul = add`): try each reading, and keep the
    # first whose replay gives every instance its own rows.
    for picked in itertools.islice(itertools.product(*choices.values()), MAX_STAND_IN_CHOICES):
        for (k, u), w in zip(choices, picked):
            plan[k][3][:] = [p for p in plan[k][3] if p[0] != u] + [(u, w)]
        if all(_replay(full_call, plan, v.absent) == [r.split("  # ")[0] for r in o_call]
               for v, (_init, o_call) in zip(variants, others)):
            return Merge(attrs, plan, variants)
    return None


def _stand_ins(call, plan, variants, diffs) -> dict | None:
    """{(plan step, name the guard makes): [stand-ins the instances show for it]}: each a
    name made before the guard (or a parameter of the forward)."""
    choices: dict[tuple[int, str], list[str]] = {}
    for v, (_deleted, _rows, subs) in zip(variants, diffs):
        for u, w in subs:
            k = next((k for k, s in enumerate(plan) if s[0] == "guard" and s[1] in v.absent
                      and any(_target(call[i]) == u for i in s[2])), None)
            if k is None:
                return None
            first = plan[k][2][0]
            if not any(_target(call[i]) == w for i in range(1, first)) and not re.search(rf"[(, ]{w}\b", call[0]):
                return None
            if w not in choices.setdefault((k, u), []):
                choices[(k, u)].append(w)
    return choices
