"""Training with Optax, generic over the examples: the backend contract, the same public
names and signatures as torchref/training.py (parity_tests/tests/test_backend_contract.py
checks). `fit` compiles the whole run, every epoch and every batch, into one XLA
program (two nested lax.scan; jaxport/programs.py), or for a long run one program per
chunk of epochs (portcore/schedule.py); parameters and optimizer state cross this API
as numpy mappings with PyTorch names, so the torch twin can be fed the same state.

NNX modules are stateful Python objects; inside compiled code we use the functional
form instead: nnx.split(model) -> (graphdef, state), and nnx.merge(graphdef, state)
rebuilds the module from a state pytree at trace time, at no run-time cost.
"""
from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from jaxport import example_module
from jaxport import convert, model_state, optim
from jaxport.numerics import dtype_scope, dtype_scoped, jax_device, jax_dtype
from jaxport.programs import DEFAULT, Placement, batch_indices, run_fit
from jaxport.state import Layout, device_array, host_dtype, labels, opt_state_from_numpy, opt_state_to_numpy
from portcore import registry, specs


@dtype_scoped
def build_model(example, params=None, *, dtype="float32", device="cpu", form="class", seed=0):
    """The example's nnx.Module. Without params: torch's init distribution, JAX's PRNG."""
    jax_dtype(dtype)
    with jax.default_device(jax_device(device)):
        model = example_module(example).build_model(form, seed=seed, dtype=dtype)
        if params is not None:
            convert.load_numpy(model, params, example, form)
    return model


@dtype_scoped
def default_params(example, seed=0, *, dtype="float32", form="class") -> dict:
    """jaxport's default initial parameters for this seed, in the exchange format."""
    return convert.to_numpy(nnx.state(build_model(example, dtype=dtype, form=form, seed=seed)), example, form)


@dtype_scoped
def loss_and_grads(example, params, x, y, *, dtype="float32", device="cpu", form="class"):
    """(loss, {name: gradient}) of the example's loss on (x, y) at `params`."""
    graphdef, state = DEFAULT.split(example, params, dtype, device, form)
    loss, grads, _ = DEFAULT.value_and_grad(example, graphdef)(
        state, device_array(x, dtype, device), labels(example, y, dtype, device))
    return float(loss), convert.to_numpy(grads, example, form)


@dtype_scoped
def predict(example, params, x, *, dtype="float32", device="cpu", form="class") -> np.ndarray:
    graphdef, state = DEFAULT.split(example, params, dtype, device, form)
    return np.asarray(DEFAULT.forward(graphdef)(state, device_array(x, dtype, device)))


@dtype_scoped
def train_step(example, params, opt_state, x, y, config, *, dtype="float32", device="cpu",
               form="class"):
    """One optimizer step from (params, opt_state) on the batch (x, y).

    Returns (loss before the update, grads, new params, new opt_state), all numpy.
    opt_state None or {} is a fresh optimizer.
    """
    graphdef, state = DEFAULT.split(example, params, dtype, device, form)
    template = optim.make_optimizer(config).init(model_state.split(state)[0])
    opt = opt_state_from_numpy(template, opt_state or {}, example, form, jax_dtype(dtype))
    # Committed to the device like `state`, so the jitted step sees the same input
    # placement every call and compiles once.
    opt = jax.device_put(opt, jax_device(device))
    loss, grads, state, opt = DEFAULT.step(example, graphdef, config)(
        state, opt, device_array(x, dtype, device), labels(example, y, dtype, device))
    return (float(loss), convert.to_numpy(grads, example, form), convert.to_numpy(state, example, form),
            opt_state_to_numpy(opt, example, form))


class Stepper:
    """train_step without its per-call set-up, for thousands of steps (the ladder's
    teacher-forced rung): the compiled step is built once, and the exchange-format
    arrays go straight into the pytree's leaves. Bit for bit train_step's result."""

    def __init__(self, example, config, params, opt_state=None, *, dtype="float32", device="cpu",
                 form="class"):
        self.dtype_name, self.device = dtype, jax_device(device)
        with dtype_scope(dtype):
            self.dtype = jax_dtype(dtype)
            self.label_dtype = host_dtype(registry.get(example).label_dtype(dtype))
            graphdef, state = DEFAULT.split(example, None, dtype, device, form)
            self.params_layout = Layout(state, example, form)
            # the gradients' tree holds the parameters alone (no running statistics)
            self.grads_layout = Layout(model_state.split(state)[0], example, form)
            self.opt_layout = Layout(optim.make_optimizer(config).init(model_state.split(state)[0]), example, form)
            self.fn = DEFAULT.step(example, graphdef, config)
        self.trees = (state, None)
        self.load(params, opt_state)

    def load(self, params, opt_state=None) -> None:
        """Continue from these parameters (None: keep the model's) and optimizer state
        (None: a fresh optimizer)."""
        model = self.trees[0] if params is None else self.params_layout.tree(params)
        self.trees = model, self.opt_layout.tree(opt_state or {})

    def step(self, xb, yb):
        """(loss before the update, grads, new params, new opt_state), numpy, like train_step."""
        # numpy in: jit's own transfer (per-leaf device_put costs ~1 ms a step).
        with dtype_scope(self.dtype_name), jax.default_device(self.device):
            loss, grads, new, opt = self.fn(*self.trees, np.asarray(xb, self.dtype), np.asarray(yb, self.label_dtype))
        self.trees = new, opt
        return float(loss), self.grads_layout.arrays(grads), *self.state()

    def state(self) -> tuple[dict, dict]:
        return self.params_layout.arrays(self.trees[0]), self.opt_layout.arrays(self.trees[1])


def stepper(example, config, params, opt_state=None, *, dtype="float32", device="cpu",
            form="class") -> Stepper:
    """A Stepper at (params, opt_state)."""
    return Stepper(example, config, params, opt_state, dtype=dtype, device=device, form=form)


def _one_device(dtype, device, batch_size) -> Placement:
    dev = jax_device(device)
    return Placement(put_tree=lambda tree: jax.device_put(tree, dev),
                     put_data=lambda a, dtype: device_array(a, dtype, device),
                     put_batches=lambda chunk: jax.device_put(batch_indices(chunk, batch_size), dev),
                     to_host=np.asarray, jit=jax.jit)


@dtype_scoped
def fit(example, params, x, y, order, config, *, dtype="float32", device="cpu", form="class",
        frames=False, progress=False, stop_on_divergence=False, chunk_epochs=None,
        devices=1, opt_state=None, checkpoint=None) -> specs.FitResult:
    """The whole run from `params`, compiled once per configuration and then reused.

    order: (epochs, N) sample indices (specs.batch_order) or a schedule.EpochOrder.
    A run of up to schedule.CHUNK_STEPS steps is one XLA program; a longer one runs
    chunk_epochs epochs at a time (one compilation for all full chunks, bit-identical to
    one program), so memory stays bounded. frames: record the animation's state
    (module.frame) at the start of every kept epoch. stop_on_divergence: stop after the
    chunk in which a loss became inf or NaN. devices: data parallel over that many
    devices (jaxport/parallel.py: the global batch split, the loss its global weighted
    mean); 1 is one device. opt_state: the optimizer's state to start from (None: a
    fresh optimizer). checkpoint: a portcore.checkpoint.Checkpointer, given the state at
    chunk ends (chunks split at its multiples of epochs) and at the end.
    """
    kw = dict(dtype=dtype, device=device, form=form, frames=frames, progress=progress,
              stop_on_divergence=stop_on_divergence, chunk_epochs=chunk_epochs, opt_state=opt_state,
              checkpoint=checkpoint)
    if devices != 1:
        from jaxport import parallel
        return parallel.fit(example, params, x, y, order, config, devices=devices, **kw)
    return run_fit(DEFAULT, example, params, x, y, order, config, _one_device(dtype, device, config.batch_size), **kw)


def clear_caches() -> None:
    """Forget every compiled function (a planted bug's, or before measuring a compile)."""
    DEFAULT.clear()
