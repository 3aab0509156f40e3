"""The classes of the file from the labelled instances (classes.py): each label's
class with the numbers its instances differ in as `__init__` arguments, each
instance's constructor call with its own values, children before parents."""
from __future__ import annotations

import inspect
import re
import textwrap
from dataclasses import dataclass, field

from jaxport.translate.classes import CHILD, Inst, Unmerged, blank, identifier, number_name, numbers
from jaxport.translate.init_args import init_arg_values
from jaxport.translate.optional import merge_plan


@dataclass
class Cls:
    name: str
    params: list[str] = field(default_factory=list)
    optional: set[str] = field(default_factory=set)        # default None: not every instance uses it
    values: dict[int, dict[str, str]] = field(default_factory=dict)   # id(instance) -> {param: literal}
    rows: list[str] = field(default_factory=list)           # the class, from its `class` line
    inline: bool = False


class Renderer:
    def __init__(self, insts: dict[int, Inst]):
        self.insts, self.cls, self.order, self.busy = insts, {}, [], set()
        self.groups: dict[int, list[int]] = {}
        for i, inst in insts.items():
            self.groups.setdefault(inst.label, []).append(i)
        self.names: dict[str, list[int]] = {}          # torch class name -> its labels with classes

    def ctor(self, i: int, rngs: str = "rngs") -> str:
        inst = self.insts[i]
        c = self.finish(inst.label)
        if c.inline:
            items = "".join("\n" + textwrap.indent(self.ctor(k), "    ") + "," for k in inst.children)
            return "nnx.Sequential(" + items + "\n)"
        args = [f"{p}={v}" for p, v in c.values[i].items()]
        return f"{c.name}({', '.join(args + [f'rngs={rngs}', 'dtype=dtype'])})"

    def rendered(self, inst: Inst) -> list[str]:
        return [CHILD.sub(lambda mt: self.ctor(int(mt.group(1))), s) for s in inst.init]

    def finish(self, label: int) -> Cls:
        if label in self.cls:
            return self.cls[label]
        if label in self.busy:
            raise RuntimeError("a class that contains itself")
        self.busy.add(label)
        members = [self.insts[i] for i in self.groups[label]]
        for inst in members:
            for k in inst.children:
                self.finish(self.insts[k].label)
        if members[0].inline:
            c = Cls("nnx.Sequential", inline=True)
        else:
            c = self.write(members)
            self.order.append(c)
        self.cls[label] = c
        return c

    # ---- one class ---------------------------------------------------------------------
    def write(self, members: list[Inst]) -> Cls:
        inits = {id(inst.m): self.rendered(inst) for inst in members}
        full = min(members, key=lambda inst: (-len(inst.init), sum(s.endswith("= None") for s in inst.init)))
        f_init, f_call = inits[id(full.m)], full.call
        def blank_call(rows):
            return rows[:1] + [blank(r) for r in rows[1:]]
        merge = merge_plan([blank(s) for s in f_init], blank_call(f_call),
                           [([blank(s) for s in inits[id(inst.m)]], blank_call(inst.call)) for inst in members])
        if merge is None:
            raise Unmerged(type(full.m).__qualname__)
        maps = {id(inst.m): (v.init_map, v.row_map) for inst, v in zip(members, merge.variants)}
        # every number of full's code, and each instance's value of it
        positions = [("init", s, n) for s in range(len(f_init)) for n in numbers(f_init[s])]
        positions += [("call", r, n) for r in range(1, len(f_call)) for n in numbers(f_call[r])]
        vectors = []
        for sec, s, n in positions:
            k = numbers(f_init[s] if sec == "init" else f_call[s]).index(n)
            vec = []
            for inst in members:
                m_init, m_call = maps[id(inst.m)]
                t = (m_init if sec == "init" else m_call).get(s)
                own = None if t is None else (inits[id(inst.m)][t] if sec == "init" else inst.call[t])
                vec.append(None if own is None else numbers(own)[k][2])
            vectors.append(vec)
        varying = [p for p, v in enumerate(vectors) if len({x for x in v if x is not None}) > 1]
        groups: list[tuple[list[int], list]] = []            # (positions, merged vector)
        for p in varying:
            for g in groups:
                if all(a is None or b is None or a == b for a, b in zip(g[1], vectors[p])):
                    g[0].append(p)
                    g[1][:] = [a if a is not None else b for a, b in zip(g[1], vectors[p])]
                    break
            else:
                groups.append(([p], list(vectors[p])))
        for p, v in enumerate(vectors):     # one value, only where an optional child is: an argument's, if it fits one
            if p not in varying and None in v and any(x is not None for x in v):
                fits = [g for g in groups if all(a is None or a == b for a, b in zip(v, g[1]))]
                if len(fits) == 1:
                    fits[0][0].append(p)
        names = self.name_arguments(full, members, positions, groups, f_init, f_call)
        c = Cls(self.class_name(full, members))
        c.params = names + merge.attrs
        c.optional = {n for n, g in zip(names, groups) if None in g[1]}
        for j, (inst, variant) in enumerate(zip(members, merge.variants)):
            vals = {n: g[1][j] for n, g in zip(names, groups) if g[1][j] is not None}
            vals.update({a: str(a not in variant.absent) for a in merge.attrs})
            c.values[id(inst.m)] = vals
        c.rows = self.class_rows(full, c, merge, positions, groups, names, f_init, f_call)
        return c

    def name_arguments(self, full, members, positions, groups, f_init, f_call) -> list[str]:
        try:
            torch_params = [p for p in inspect.signature(type(full.m).__init__).parameters if p != "self"]
        except (TypeError, ValueError):
            torch_params = []
        taken = set(full.m._modules) | set(full.m._parameters) | set(full.m._buffers)
        torch_values = [init_arg_values(inst.m) for inst in members]
        names = []
        for ps, vec in groups:
            # torch's parameter whose value is this argument's on every instance that has one;
            # two such parameters (equal on every instance) say nothing: the layer's name then
            own = [a for a in torch_params if all(v is None or (a in values and float(v) == float(values[a]))
                                                  for values, v in zip(torch_values, vec))]
            sec, s, n = positions[ps[0]]
            what, where = number_name(f_init[s] if sec == "init" else f_call[s], n[0], n[1])
            for cand in [*(own if len(own) == 1 else []), what, f"{where}_{what}"]:
                cand = identifier(cand)
                if cand not in names and cand not in taken:
                    break
            while cand in names or cand in taken:
                cand += "_"
            names.append(cand)
        return names

    def class_name(self, full, members) -> str:
        base = type(full.m).__name__
        taken = self.names.setdefault(base, [])
        taken.append(full)
        return base if len(taken) == 1 else f"{base}_{len(taken)}"

    def class_rows(self, full, c, merge, positions, groups, names, f_init, f_call) -> list[str]:
        init, call = list(f_init), list(f_call)
        repl: dict[tuple[str, int], list] = {}
        for name, (ps, _vec) in zip(names, groups):
            for p in ps:
                sec, s, (row, col, text) = positions[p]
                repl.setdefault((sec, s), []).append((row, col, text, name if sec == "init" else f"self.{name}"))
        for (sec, s), items in repl.items():
            rows = (init if sec == "init" else call)[s].split("\n")
            for row, col, text, new in sorted(items, reverse=True):
                r = rows[row - 1]
                col += len(r) - len(r.lstrip()) if sec == "call" else 0
                assert r[col:col + len(text)] == text, (r, col, text)
                rows[row - 1] = r[:col] + new + r[col + len(text):]
            (init if sec == "init" else call)[s] = "\n".join(rows)
        for a in merge.attrs:                # each optional child built only when asked
            init = [s + f" if {a} else None" if s.startswith(f"self.{a} = ") else s for s in init]
        stored = [n for n, (ps, _v) in zip(names, groups) if any(positions[p][0] == "call" for p in ps)]
        init = [f"self.{n} = {n}" for n in stored] + init
        args = [p for p in names if p not in c.optional] + merge.attrs
        args += [f"{p}=None" for p in names if p in c.optional]
        head = f"def __init__(self, {''.join(a + ', ' for a in args)}*, rngs: nnx.Rngs, dtype=jnp.float32):"
        body = [head] + ["    " + ln for s in init or ["pass"] for ln in s.split("\n")] + [""]
        body += self.guarded(call, merge.plan)
        parent = "nnx.Sequential" if full.init[:1] and full.init[0].startswith("super().__init__(") else "nnx.Module"
        rows = [f"class {c.name}({parent}):"] + [("    " + ln) if ln else "" for ln in body]
        if c.name != type(full.m).__name__:
            rows.insert(0, self.why(full, c.name))
        return rows

    @staticmethod
    def guarded(call, plan) -> list[str]:
        out = []
        for step in plan:
            if step[0] == "row":
                out.append(call[step[1]])
                continue
            _, attr, rows, stand_ins = step
            out.append(f"    if self.{attr} is not None:")
            out += ["    " + call[i] for i in rows]
            if stand_ins:
                out.append("    else:")
                out += [f"        {u} = {w}  # torch's {attr} is None here" for u, w in stand_ins]
        return out

    def why(self, full, name) -> str:
        base = type(full.m).__name__
        first = self.names[base][0]
        a = [re.split(r" = |\(", s)[0] for s in first.init]
        b = [re.split(r" = |\(", s)[0] for s in full.init]
        what = "other layers" if a != b else "layers of other kinds" if (
            [blank(CHILD.sub("_", s)) for s in first.init] != [blank(CHILD.sub("_", s)) for s in full.init]) \
            else "another forward"
        return (f"# {name}: torch's {base} too, but with {what} than {base}'s (more than other constructor "
                "arguments), so a class of its own")
