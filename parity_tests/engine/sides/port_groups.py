"""Parameter groups for weight decay, for check_port's `no_decay=`: nanoGPT (and most
transformer training loops) keep weight decay off biases and norms.

torch: two param groups, `[{"params": decayed}, {"params": the rest, "weight_decay":
0.0}]`, the optimizer's other settings shared; torch's single-tensor step runs per
parameter, so a group changes nothing else. JAX: the optimizer's transformation is
given the parameters with the undecayed ones replaced by zeros. Every transformation
check_port builds by name (jaxport.optim) reads the
parameters only for weight decay: coupled, g + wd p, or decoupled, u - lr wd p; with p
zero both are the update without decay, exactly (x + 0 is x). The state is untouched,
so it still converts to and from torch's.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from parity_tests.engine.sides.port_objectives import SPECS, PortInputError


def _weight_decay(optimizer, weight_decay, options) -> float:
    given = (options or {}).get("weight_decay", weight_decay)
    return float(SPECS[optimizer].get("weight_decay", 0.0) if given is None else given)


def decayed_nnx_paths(port, no_decay) -> dict:
    """{NNX parameter path: True where decayed} from the torch names `no_decay(name)`
    says True for; an NNX array fed by torch arrays of both kinds is bad input."""
    names = [n for n, _ in port.torch_model.named_parameters()]
    flags = {}
    for name in names:
        answer = no_decay(name)
        if not isinstance(answer, bool):
            raise PortInputError(f"no_decay({name!r}) returned {answer!r}: it must return True or False")
        flags[name] = not answer
    by_path: dict = {}
    for name, spots in port.pullback_index(names).items():
        for path, _, _ in spots:
            by_path.setdefault(path, set()).add(name)
    out = {}
    for path, sources in by_path.items():
        kinds = {flags[n] for n in sources}
        if len(kinds) > 1:
            raise PortInputError(f"NNX {'.'.join(map(str, path))} is built from torch arrays with and without weight "
                                 f"decay ({', '.join(sorted(sources))}): no_decay must say the same for all of them")
        out[path] = kinds.pop()
    return out


def with_groups(pair, port, no_decay, optimizer, weight_decay, options):
    """The optimizer pair (port_objectives.OptimizerPair) with weight decay only on the
    parameters no_decay(torch name) is False for."""
    from parity_tests.engine.sides.port_nnx import state_path  # noqa: PLC0415
    if not callable(no_decay):
        raise PortInputError(f"no_decay must be a function of a torch parameter name, not {no_decay!r}")
    if not isinstance(optimizer, str):
        raise PortInputError("no_decay takes a named optimizer; an explicit pair builds its own groups")
    if not _weight_decay(optimizer, weight_decay, options):
        raise PortInputError(f"no_decay is given but {optimizer} has no weight decay here (weight_decay=0)")
    decayed = decayed_nnx_paths(port, no_decay)
    order = [not no_decay(n) for n, _ in port.torch_model.named_parameters()]

    def factory(params):
        # TorchSide.optimizer passes model.parameters() of a copy of port.torch_model:
        # named_parameters' order
        params = list(params)
        if len(params) != len(order):
            raise PortInputError(f"no_decay: the optimizer got {len(params)} parameters, the model has {len(order)}")
        return pair.torch([{"params": [p for p, d in zip(params, order) if d]},
                           {"params": [p for p, d in zip(params, order) if not d], "weight_decay": 0.0}])

    def update(grads, state, params=None):
        masked = jax.tree_util.tree_map_with_path(
            lambda k, p: p if decayed.get(state_path(k), True) else jnp.zeros_like(p), params)
        return pair.optax.update(grads, state, masked)
    kept = sum(not d for d in order)
    return dataclasses.replace(pair, label=f"{pair.label}, no weight decay on {kept} of {len(order)} tensors",
                               torch=factory, optax=optax.GradientTransformation(pair.optax.init, update))
