"""Match a torch module tree to an NNX one by structure, as PaDiff matches Paddle's and
torch's: names first, then order.

Users write containers differently in the two frameworks: nn.Sequential's children are
`0, 1, 2`, nnx.Sequential keeps them under `layers` (`layers.0, layers.1`); nn.ModuleList
is an nnx.List, nn.ModuleDict an nnx.Dict (both keyed as torch keys them). And a
Sequential's indices need not line up: torch's `Sequential(Linear, ReLU, Dropout, Linear)`
is often `nnx.Sequential(Linear, nnx.relu, Linear)`. So each torch layer's NNX path is
found by walking both trees together: a name that exists on the NNX side is taken as
it is; an index into a container whose item there holds no parameters (or none)
falls back on order, the k-th child with parameters on one side to the k-th on the
other. What is still left to the user's `name_map` is reported side by side
(load_nnx).
"""
from __future__ import annotations

from flax import nnx

from portcore import convert


def _holds_arrays(node) -> bool:
    try:
        return isinstance(node, (nnx.Module, list, tuple, dict)) and bool(nnx.to_flat_state(nnx.state(node, nnx.Param)))
    except Exception:                                         # noqa: BLE001 (a plain function)
        return False


def _torch_holds_arrays(module) -> bool:
    return any(True for _ in module.parameters())


def _items(container) -> list:
    """A container's children as (key, child): a list's indices, a dict's keys."""
    if isinstance(container, (list, tuple, nnx.List)):
        return list(enumerate(container))
    if isinstance(container, (dict, nnx.Dict)):
        return list(container.items())
    return []


def _child(node, torch_parent, name: str):
    """(NNX path segment(s), NNX child) for torch's child `name` of `torch_parent`, or None."""
    if isinstance(node, nnx.Sequential):                     # nnx.Sequential: its items sit under `layers`
        hop = _child(node.layers, torch_parent, name)
        return None if hop is None else (("layers",) + hop[0], hop[1])
    key = int(name) if name.isdigit() else name
    items = dict(_items(node))
    if items:
        child = items.get(key)
        if child is not None and _holds_arrays(child) == _torch_holds_arrays(torch_parent._modules[name]):
            return (key,), child
        # by order: the k-th torch child with parameters is the k-th NNX child with them
        torch_kids = [n for n, m in torch_parent._modules.items() if m is not None and _torch_holds_arrays(m)]
        nnx_kids = [(k, c) for k, c in _items(node) if _holds_arrays(c)]
        if name in torch_kids and len(torch_kids) == len(nnx_kids):
            k, c = nnx_kids[torch_kids.index(name)]
            return (k,), c
        return None
    if not name.isdigit() and hasattr(node, name):
        return (name,), getattr(node, name)
    return None


def match(torch_model, nnx_model, torch_paths) -> dict:
    """{torch layer path: NNX path tuple} for each of `torch_paths` whose NNX path differs
    from the plain one (convert.flax_path) and that the walk finds."""
    out = {}
    for path in torch_paths:
        node, parent, found = nnx_model, torch_model, ()
        for name in path.split("."):
            hop = _child(node, parent, name)
            if hop is None:
                found = None
                break
            found, node, parent = found + hop[0], hop[1], parent._modules[name]
        if found is not None and found != convert.flax_path(path):
            out[path] = found
    return out
