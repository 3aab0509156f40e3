"""The NNX side of a port as pure, jit-compiled functions of flat arrays: the loss and
gradients, one optimizer step, and predictions, each from any state the harness hands
it (torch's, in teacher-forced steps).

Every call runs inside jaxport's dtype scope (jax_enable_x64 on for float64 only, for
that call), so the harness leaves the global flag as it found it.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, traverse_util

from jaxport.numerics import dtype_scope
from portcore import convert

from parity_tests.engine.sides import port_dropout, tree_match
from parity_tests.engine.sides.pytrees import call, map_leaves, view
from parity_tests.engine.sides.port_models import (Port, PortInputError, layer_kinds, path_text, torch_arrays,
                                                   torch_copy)
from parity_tests.engine.sides.port_objectives import refused


def state_path(keys) -> tuple:
    """A jax key path into an nnx.State as an NNX state path (without the Variable's
    own `.value`)."""
    return tuple(next((getattr(k, a) for a in ("key", "name", "idx") if hasattr(k, a)), str(k)) for k in keys
                 if not (isinstance(k, jax.tree_util.GetAttrKey) and k.name == "value"))


def nnx_clone(model, dtype: str):
    """The caller's NNX model cloned, every layer set to compute in `dtype` (an LSTM
    cell draws its carry in its param_dtype), batch statistics on, dropout off."""
    clone = nnx.clone(model)
    target = {"float32": jnp.float32, "float64": jnp.float64}[dtype]
    for _, module in nnx.iter_modules(clone):
        if hasattr(module, "param_dtype"):
            module.param_dtype = target
        if getattr(module, "dtype", None) is not None:
            module.dtype = target
    clone.set_attributes(deterministic=True, use_running_average=False, raise_if_not_found=False)
    return clone


# The NNX state that crosses from torch: every variable but random streams (parameters,
# batch statistics, a shared dropout's step counter).
CARRIED = nnx.Not(nnx.RngState)


def nnx_arrays(model, what=CARRIED) -> dict:
    """{NNX path: numpy array} of the model's variables that `what` selects."""
    return {p: np.asarray(v) for p, v in traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model, what))).items()}


def load_nnx(port: Port, torch_arrays: dict) -> None:
    """Write torch's arrays, converted, into the NNX clone; every NNX parameter must get
    one, with its shape."""
    have = nnx_arrays(port.nnx_model)
    target = port.to_nnx(torch_arrays)
    unmatched = sorted({port.layer_of(p) or path_text(p) for p in target if p not in have})
    unreached = [path_text(p) for p in have if p not in target]
    shapes = [f"NNX {path_text(p)} has shape {have[p].shape}, torch's converted {target[p].shape}"
              for p in have if p in target and have[p].shape != target[p].shape]
    # a torch parameter must land on an nnx.Param: another Variable is not trained
    trained = set(nnx_arrays(port.nnx_model, nnx.Param))
    names = {n for n, _ in port.torch_model.named_parameters()}
    frozen = [path_text(p) for p in port.to_nnx({n: v for n, v in torch_arrays.items() if n in names})
              if p in have and p not in trained]
    if frozen:
        shapes.insert(0, f"torch parameters held by NNX variables that are not nnx.Param (not trained): "
                         f"{', '.join(frozen)}")
    if unmatched or unreached or shapes:
        side = (f"torch layers with no NNX counterpart: {', '.join(unmatched) or 'none'} | NNX arrays no torch "
                f"layer reaches: {', '.join(unreached[:12]) or 'none'}"
                + (f" (and {len(unreached) - 12} more)" if len(unreached) > 12 else "")
                + " (matched by name, then by order inside Sequential/List/Dict; give name_map="
                  "{torch path: NNX path} for the rest)") if unmatched or unreached else ""
        raise PortInputError("; ".join([s for s in [side, *shapes[:4]] if s]))
    with dtype_scope(port.dtype):
        # floats in the run's dtype; integer state (a dropout counter) keeps its own
        kept = {p: jnp.asarray(v, port.dtype if jnp.issubdtype(have[p].dtype, jnp.floating) else have[p].dtype)
                for p, v in target.items()}
        state = nnx.state(port.nnx_model, CARRIED)
        nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(kept))
        nnx.update(port.nnx_model, state)


class NnxRunner:
    """Pure functions of the NNX clone. States cross as {NNX path: numpy array}."""

    def __init__(self, port: Port, loss_fn, tx: optax.GradientTransformation, opt_kind):
        self.port, self.dtype, self.tx, self.opt_kind = port, port.dtype, tx, opt_kind
        model = port.nnx_model
        with dtype_scope(self.dtype):
            self.train_def, params, self.rest = nnx.split(model, nnx.Param, ...)
            model.set_attributes(use_running_average=True, deterministic=True, raise_if_not_found=False)
            self.eval_def = nnx.split(model, nnx.Param, ...)[0]
            model.set_attributes(use_running_average=False, raise_if_not_found=False)
            if port.dropout:           # eval mode without dropout, training with it (port_dropout.py)
                port_dropout.dropout_on(model)
        leaves, self.treedef = jax.tree_util.tree_flatten_with_path(params)
        self.paths = [state_path(path) for path, _ in leaves]
        self.shapes = {p: np.shape(v) for p, (_, v) in zip(self.paths, leaves)}

        def step(params, rest, opt_state, x, y):
            # merged at the jit's level and differentiated with nnx.value_and_grad: a
            # module that updates its own state inside (an RNN cell's carry RNG count,
            # batch statistics) must not be merged under jax.grad's trace
            m = nnx.merge(self.train_def, params, rest)
            loss, grads = nnx.value_and_grad(lambda m: loss_fn(call(m, x), y))(m)
            new_rest = nnx.state(m, nnx.Not(nnx.Param))
            updates, opt_state = tx.update(grads, opt_state, params)
            return loss, grads, optax.apply_updates(params, updates), new_rest, opt_state

        def predict(params, rest, x):
            return view(call(nnx.merge(self.eval_def, params, rest), x), port.output)

        def eval_loss(params, rest, x, y):
            return loss_fn(call(nnx.merge(self.eval_def, params, rest), x), y)
        self._step, self._predict, self._template = jax.jit(step), jax.jit(predict), None
        self._eval_loss = jax.jit(eval_loss)

    def eval_loss(self, params: dict, x, y, rest=None) -> float:
        """The loss of the model with these parameters, in eval mode, on the whole data
        (rung 7's final loss)."""
        with dtype_scope(self.dtype):
            return float(self._eval_loss(self.tree(params), self.rest if rest is None else rest, self._x(x), self._y(y)))

    def loss_shape(self, x, y) -> tuple:
        """The loss's shape on x and y, traced only (the harness's input check)."""
        with dtype_scope(self.dtype):
            return jax.eval_shape(self._eval_loss, self.tree(self.params()), self.rest, self._x(x), self._y(y)).shape

    def output_shape(self, x) -> tuple:
        """The model's output shape on x, traced only (nothing compiled)."""
        with dtype_scope(self.dtype):
            return jax.eval_shape(self._predict, self.tree(self.params()), self.rest, self._x(x)).shape

    # ---- flat arrays <-> states -----------------------------------------------------
    def params(self) -> dict:
        """The clone's current parameters, flat."""
        return nnx_arrays(self.port.nnx_model, nnx.Param)

    def tree(self, flat: dict):
        return jax.tree.unflatten(self.treedef, [jnp.asarray(flat[p], self.dtype) for p in self.paths])

    def flat(self, tree) -> dict:
        return dict(zip(self.paths, (np.asarray(v) for v in jax.tree.leaves(tree))))

    def rest_with(self, nnx_arrays: dict):
        """The non-parameter state with the running statistics set from `nnx_arrays`."""
        with dtype_scope(self.dtype):
            leaves, treedef = jax.tree_util.tree_flatten_with_path(self.rest)
            new = [jnp.asarray(nnx_arrays[p], leaf.dtype) if p in nnx_arrays else leaf
                   for p, leaf in ((state_path(path), leaf) for path, leaf in leaves)]
            return jax.tree.unflatten(treedef, new)

    def rest_arrays(self, rest, paths) -> dict:
        """The entries of a non-parameter state at `paths` (running statistics), flat."""
        leaves = jax.tree_util.tree_flatten_with_path(rest)[0]
        return {p: np.asarray(leaf) for p, leaf in ((state_path(k), leaf) for k, leaf in leaves) if p in paths}

    def opt_state(self, moments: dict | None, count: int):
        """optax's state from torch's moments ({"exp_avg": flat, ...} on NNX paths) at
        step `count`. kind "torch" (jaxport.optim.TorchState): each slot is torch's state
        entry of the same name, and the count (the schedule's position) is set even
        where torch keeps no moment (plain SGD under a schedule)."""
        if self._template is None:         # compiled once: eager zeros_like compiles per shape
            self._template = jax.jit(self.tx.init)(self.tree({p: np.zeros(s) for p, s in self.shapes.items()}))
        if self.opt_kind == "torch":
            from jaxport.optim import TorchState  # noqa: PLC0415
            slots = {k: self.tree(moments[k]) if moments and k in moments else v
                     for k, v in self._template.slots.items()}
            return TorchState(count=jnp.asarray(count, jnp.int32), slots=slots)
        if self.opt_kind == "adam" and moments:
            return optax.ScaleByAdamState(count=jnp.asarray(count, jnp.int32), mu=self.tree(moments["exp_avg"]),
                                          nu=self.tree(moments["exp_avg_sq"]))
        return self._template          # no moments yet, or an explicit pair's (not converted)

    def moments(self, opt_state) -> dict:
        """optax's state as torch's moment names, flat on NNX paths."""
        if self.opt_kind == "adam":
            return {"exp_avg": self.flat(opt_state.mu), "exp_avg_sq": self.flat(opt_state.nu)}
        if self.opt_kind == "torch":
            return {k: self.flat(v) for k, v in opt_state.slots.items()}
        return {}

    # ---- the computations -----------------------------------------------------------
    def step(self, params: dict, x, y, moments=None, count: int = 0, rest=None, opt_state=None):
        """One step from `params` (and torch's moments, or an optax state): (loss, grads,
        new params, new rest, new optax state) with flat dicts."""
        with dtype_scope(self.dtype):
            state = opt_state if opt_state is not None else self.opt_state(moments, count)
            loss, grads, new, new_rest, state = self._step(self.tree(params), self.rest if rest is None else rest,
                                                           state, self._x(x), self._y(y))
            return float(loss), self.flat(grads), self.flat(new), new_rest, state

    def predict(self, params: dict, x, rest=None) -> np.ndarray:
        with dtype_scope(self.dtype):
            return np.asarray(self._predict(self.tree(params), self.rest if rest is None else rest, self._x(x)))

    def _x(self, x):
        # integer inputs (token ids): int32 unless the run is float64 (x64 on: their own)
        return jax_inputs(self.port.nnx_input(x), self.dtype, None if self.dtype == "float64" else jnp.int32)

    def _y(self, y):
        return jax_inputs(y, self.dtype)


def jax_inputs(x, dtype: str, integer=jnp.int32):
    """Each input array (or the targets) in the run's dtype where it holds floats, else
    in `integer` (None: its own)."""
    def one(a):
        a = np.asarray(a)
        return jnp.asarray(a, dtype if np.issubdtype(a.dtype, np.floating) else integer)
    return map_leaves(one, x)


def build_port(torch_model, nnx_model, spec, output=None) -> Port:
    """Both copies, the layer map, and torch's weights written into the NNX clone, as
    `spec` (port_setup.RunSpec) pairs them."""
    if spec.input_layout not in (None, "nchw", "nhwc"):
        raise PortInputError(f"unknown input layout {spec.input_layout!r} (use nchw or nhwc)")
    model = torch_copy(torch_model, spec.dtype)
    clone = nnx_clone(nnx_model, spec.dtype)
    if spec.dropout:                   # the hash-mask dropout on both sides (port_dropout.py)
        port_dropout.swap_torch(model)
        port_dropout.swap_nnx(clone, spec.input_layout == "nhwc")
    # the trees matched by structure (nn.Sequential's `0` is nnx.Sequential's `layers.0`),
    # then the caller's name_map for what is left
    owners = [path for path, m in model.named_modules() if path and (
        any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False)))]
    flax_paths = {**tree_match.match(model, clone, owners),
                  **{p: convert.flax_path(q) for p, q in (spec.name_map or {}).items()}}
    layers = layer_kinds(model, set(nnx_arrays(clone)), flax_paths, spec.convert or {})
    layout = None if spec.input_layout == "nchw" else spec.input_layout
    port = Port(model, clone, layers, flax_paths, spec.dtype, layout, output, bool(spec.dropout))
    # ValueError, KeyError: a layer kind's own refusal
    with refused(lambda error: f"converting torch's weights: {error}", (ValueError, KeyError)):
        load_nnx(port, torch_arrays(model))
    return port
