"""Models whose state is more than their parameters (BatchNorm's running statistics, the
shared dropout's step counter): the training step differentiates the parameters only
and threads the rest through, as torch's forward updates its buffers in place.

For a model of parameters only the rest is an empty State: the same program as before.
"""
from __future__ import annotations

import jax
from flax import nnx


def split(state):
    """(parameters, the rest) of a model's state."""
    return nnx.split_state(state, nnx.Param, ...)


def merge(params, rest):
    return nnx.merge_state(params, rest)


def forward(example_module, model, x, weight=None):
    """The model in training mode on a batch. An example whose model keeps batch
    statistics defines apply(model, x, weight), so the rows the compiled loop pads a
    partial batch with (weight 0) do not count in them."""
    apply = getattr(example_module, "apply", None)
    return apply(model, x, weight) if apply is not None else model(x)


def eval_view(model):
    """model.eval() as a view: BatchNorm on its running statistics, dropout off."""
    return nnx.view(model, deterministic=True, use_running_average=True, raise_if_not_found=False)


def value_and_grad(example_module, graphdef):
    """f(state, x, y, weight=None) -> (loss, gradients of the parameters, the rest of
    the state after the forward pass)."""
    def loss(params, rest, x, y, weight):
        model = nnx.merge(graphdef, params, rest, copy=True)   # fresh Variables, mutable in this trace
        value = example_module.loss_fn(forward(example_module, model, x, weight), y, weight)
        return value, split(nnx.state(model))[1]
    grad = jax.value_and_grad(loss, has_aux=True)

    def f(state, x, y, weight=None):
        (value, rest), grads = grad(*split(state), x, y, weight)
        return value, grads, rest
    return f
