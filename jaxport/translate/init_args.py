"""The values a torch module's `__init__` parameters had, read back from one instance
(issue 30), so that a merged class's arguments can take torch's names (torchvision's
BasicBlock: `inplanes, planes, stride`).

A module does not keep its constructor's arguments, but its children do: where
`__init__` hands a parameter straight to a child's constructor (`self.conv1 =
conv3x3(inplanes, planes, stride)`, through helper functions that return the layer,
and `nn.Sequential(...)`'s items), the child holds it as an attribute
(`conv1.in_channels`). A plain attribute of the same name (`self.stride = stride`)
counts too. A parameter is left out where two readings disagree or `__init__`
reassigns it: the caller then falls back to naming the argument after the layer.
"""
from __future__ import annotations

import ast
import builtins
import functools
import inspect
import textwrap

from torch import nn

MAX_DEPTH = 4                       # helpers within helpers: deeper ones are not followed


def init_arg_values(m, depth: int = 0) -> dict[str, int | float]:
    """{torch __init__ parameter: its value in `m`} where one reading gives it."""
    init = type(m).__init__
    tree = _function_tree(init)
    if tree is None:
        return {}
    params = _plain_params(init, tree)
    found: dict[str, set] = {p: {v} for p in params if (v := _number(getattr(m, p, None)))
                             is not None}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            for t, value in _pairs(target, node.value):
                child = m._modules.get(t.attr) if _is_self_attr(t) else None
                if child is not None and isinstance(value, ast.Call):
                    for name, v in _call_values(value, init.__globals__, child, depth):
                        if name in params:
                            found.setdefault(name, set()).add(v)
    return {p: vs.pop() for p, vs in found.items() if len(vs) == 1}


@functools.lru_cache(maxsize=None)
def _function_tree(fn) -> ast.FunctionDef | None:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return None
    node = tree.body[0] if tree.body else None
    return node if isinstance(node, ast.FunctionDef) else None


def _plain_params(fn, tree: ast.FunctionDef) -> set[str]:
    """fn's named parameters that its body never assigns again (else a child may hold a
    changed value)."""
    try:
        names = {n for n, p in inspect.signature(fn).parameters.items()
                 if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n != "self"}
    except (TypeError, ValueError):
        return set()
    stored = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return names - stored


def _number(v):
    """An int or float (not a bool), or the one number of a tuple of equal ones
    (torch's conv keeps stride 2 as (2, 2)); else None."""
    if isinstance(v, (tuple, list)) and v and len(set(v)) == 1:
        v = v[0]
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _is_self_attr(t) -> bool:
    return isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"


def _pairs(target, value):
    """(target, value) of an assignment, tuples unpacked (`self.fc, self.k = nn.Linear(a, b), k`)."""
    if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) and len(target.elts) == len(value.elts):
        return [p for t, v in zip(target.elts, value.elts) for p in _pairs(t, v)]
    return [(target, value)]


def _resolve(expr, scope: dict):
    """What a callee expression names in the function's module (`nn.Conv2d`, `conv3x3`);
    None for a local or a parameter (`norm_layer(planes)`)."""
    if isinstance(expr, ast.Name):
        return scope.get(expr.id, getattr(builtins, expr.id, None))
    if isinstance(expr, ast.Attribute):
        owner = _resolve(expr.value, scope)
        return getattr(owner, expr.attr, None) if owner is not None else None
    return None


def _bound(callee, call: ast.Call) -> dict[str, object]:
    """{callee's parameter: the argument's ast node} of a call, as Python binds it."""
    if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
        return {}
    try:
        sig = inspect.signature(callee)
        bound = sig.bind_partial(*call.args, **{k.arg: k.value for k in call.keywords})
    except (TypeError, ValueError):
        return {}
    return dict(bound.arguments)


def _call_values(call: ast.Call, scope: dict, child, depth: int) -> list[tuple[str, object]]:
    """(name in the caller, value) for each plain name the call that built `child`
    passes on, where the child (or the layer a helper returns) keeps it."""
    if depth > MAX_DEPTH:
        return []
    callee = _resolve(call.func, scope)
    if callee is None and isinstance(call.func, ast.Name):     # a local such as norm_layer: the child's class
        callee = type(child)
    if callee is None or (isinstance(callee, type) and not isinstance(child, callee)):
        return []
    out = []
    if callee is nn.Sequential:             # nn.Sequential(a, b): its items 0, 1 built by a, b
        for i, item in enumerate(call.args):
            sub = child._modules.get(str(i))
            if isinstance(item, ast.Call) and sub is not None:
                out += _call_values(item, scope, sub, depth + 1)
        return out
    for param, node in _bound(callee, call).items():
        if not isinstance(node, ast.Name):
            continue
        if isinstance(callee, type):
            v = _number(getattr(child, param, None))
            if v is None:                   # a class of the user's: its own parameters, read back
                v = init_arg_values(child, depth + 1).get(param)
            if v is not None:
                out.append((node.id, v))
        else:                               # a helper: what it returns was built from its parameters
            out += [(node.id, v) for name, v in _helper_values(callee, child, depth) if name == param]
    return out


def _helper_values(fn, child, depth: int) -> list[tuple[str, object]]:
    """(fn's parameter, value) from the calls fn returns (`return nn.Conv2d(in_planes, ...)`)."""
    tree = _function_tree(fn)
    if tree is None or not hasattr(fn, "__globals__"):
        return []
    params = _plain_params(fn, tree)
    returns = [n.value for n in ast.walk(tree) if isinstance(n, ast.Return) and isinstance(n.value, ast.Call)]
    return [(name, v) for r in returns for name, v in _call_values(r, fn.__globals__, child, depth + 1)
            if name in params]
