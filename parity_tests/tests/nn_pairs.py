"""One comparison for jaxport.nn's layers against torch's (test_nn_layers.py): a torch
layer and its NNX twin, torch's weights copied onto the twin through the layer kinds
(convert.of_torch, to_flax), then the forward outputs and the gradients of a fixed
random projection of them, with respect to every float input and every parameter,
compared in torch's names and layouts (the NNX gradients go back through from_flax).

Tolerances: float64 relative 1e-10 with the table's absolute floor 1e-12 (the engine's
single-step table); float32 torch.testing's defaults (rtol 1.3e-6, atol 1e-5).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from portcore import convert
from portcore.recurrent_kinds import LSTM

TOL = {"float64": {"rtol": 1e-10, "atol": 1e-12}, "float32": {"rtol": 1.3e-6, "atol": 1e-5}}
JAX_DTYPES = {"float32": jnp.float32, "float64": jnp.float64}


@dataclass
class Pair:
    """torch(): the torch layer; nnx(rngs, dtype): its twin; inputs(rng): numpy arrays in
    torch's layout (floats are cast to the dtype, the rest pass as they are);
    run_torch(layer, *inputs) and run_nnx(layer, *inputs): a tuple of outputs in torch's
    layout (run_nnx takes torch's layout and transposes for the twin itself); tuples
    nest once, and None outputs are left out."""
    torch: Callable
    nnx: Callable
    inputs: Callable
    run_torch: Callable = lambda m, *a: m(*a)
    run_nnx: Callable = lambda m, *a: m(*a)


def _tuple(out):
    flat = []
    for o in (out if isinstance(out, tuple) else (out,)):
        flat += list(o) if isinstance(o, tuple) else [o]
    return tuple(o for o in flat if o is not None)


class Fn(nnx.Module):
    """A function (gelu, max_pool2d) as a twin without parameters."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)


class Holder(torch.nn.Module):
    """The layer under the path "layer", as in a user's model."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer


def kinds_of(holder) -> dict:
    """{torch path: kind} of every module holding parameters. jaxport.nn's LSTM cells carry
    torch's bias_ih (check_port reads that slot off the NNX state; here it is known)."""
    out = {}
    for path, module in holder.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            kind = convert.of_torch(module)
            out[path] = dataclasses.replace(kind, flax_input_bias=True) if isinstance(kind, LSTM) else kind
    return out


def flat(tree, prefix=()) -> dict:
    out = {}
    for k, v in tree.items():
        out.update(flat(v, prefix + (k,)) if isinstance(v, dict) else {prefix + (k,): v})
    return out


def _nested(flat_dict) -> dict:
    out: dict = {}
    for path, v in flat_dict.items():
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = v
    return out


def load(holder, twin, dtype) -> dict:
    """torch's arrays onto the twin (under "layer") through the kinds; every twin
    parameter must be set, none left over. Returns the kinds."""
    layers = kinds_of(holder)
    arrays = {n: p.detach().numpy() for n, p in holder.named_parameters()}
    mapped = convert.to_flax(layers, arrays)
    params = nnx.state(twin, nnx.Param)
    have = {("layer",) + p for p in flat(nnx.to_pure_dict(params))}
    assert set(mapped) == have, set(mapped) ^ have
    nnx.replace_by_pure_dict(params, _nested({p[1:]: jnp.asarray(v, JAX_DTYPES[dtype]) for p, v in mapped.items()}))
    nnx.update(twin, params)
    return layers


def compare(pair: Pair, dtype: str, seed: int = 0) -> dict:
    """Runs both sides; asserts outputs and gradients agree within TOL[dtype]. Returns the
    largest relative difference of each quantity (for the record)."""
    rng, tol = np.random.default_rng(seed), TOL[dtype]
    with jax.enable_x64(dtype == "float64"):
        torch.manual_seed(seed)
        holder = Holder(pair.torch()).to(getattr(torch, dtype))
        twin = pair.nnx(nnx.Rngs(0), JAX_DTYPES[dtype])
        twin = twin if isinstance(twin, nnx.Module) else Fn(twin)
        layers = load(holder, twin, dtype)
        raw = [a.astype(dtype) if np.issubdtype(a.dtype, np.floating) else a for a in pair.inputs(rng)]
        floats = [i for i, a in enumerate(raw) if np.issubdtype(a.dtype, np.floating)]
        tin = [torch.tensor(a, requires_grad=i in floats) for i, a in enumerate(raw)]
        tout = _tuple(pair.run_torch(holder.layer, *tin))
        cots = [rng.standard_normal(tuple(o.shape)).astype(dtype) for o in tout]
        sum((o * torch.tensor(c)).sum() for o, c in zip(tout, cots)).backward()

        graphdef, params, rest = nnx.split(twin, nnx.Param, ...)

        def objective(params, xs):
            args = list(raw)
            for i, x in zip(floats, xs):
                args[i] = x
            outs = _tuple(pair.run_nnx(nnx.merge(graphdef, params, rest), *args))
            return sum((o * c).sum() for o, c in zip(outs, cots)), outs
        (_, outs), (g_params, g_x) = jax.jit(jax.value_and_grad(objective, argnums=(0, 1), has_aux=True))(
            params, [jnp.asarray(raw[i]) for i in floats])
        g_torch = convert.from_flax(layers, {("layer",) + p: np.asarray(v)
                                             for p, v in flat(nnx.to_pure_dict(g_params)).items()})
    got = {f"output {k}": (np.asarray(o), t.detach().numpy()) for k, (o, t) in enumerate(zip(outs, tout))}
    got.update({f"d input {i}": (np.asarray(g), tin[i].grad.numpy()) for i, g in zip(floats, g_x)})
    got.update({f"d {n}": (g_torch[n], p.grad.numpy()) for n, p in holder.named_parameters()})
    worst = {}
    for name, (mine, theirs) in got.items():
        assert mine.shape == theirs.shape, (name, mine.shape, theirs.shape)
        assert np.isfinite(theirs).all(), f"{name}: torch's own value is not finite (a fully masked row?)"
        np.testing.assert_allclose(mine, theirs, err_msg=f"{name} ({dtype})", **tol)
        worst[name] = float(np.max(np.abs(mine - theirs) / np.maximum(np.abs(theirs), tol["atol"] / tol["rtol"]),
                                   initial=0.0))
    return worst
