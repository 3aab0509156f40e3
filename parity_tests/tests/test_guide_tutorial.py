"""The guide's first training loops, three ways, on the tutorial's linear regression:
the tutorial's own PyTorch loop, a plain jitted JAX step called from a Python loop, and
the whole run compiled into one lax.scan. The guide shows these functions as they are;
the test runs all three from the same initial weights in float64 and checks that they
fit the same line (relative 1e-12: only the order of a few roundings differs)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn as nn
import torch.optim as optim
from flax import nnx

from portcore import registry


def tutorial_loop(x, y, init):
    """The tutorial's loop, as it is written there (one full batch of 100 per epoch)."""
    linear_regression = nn.Linear(1, 1, dtype=torch.float64)
    linear_regression.load_state_dict(init)          # here only: start where the others start
    optimizer = optim.SGD(linear_regression.parameters(), lr=0.2)
    criterion = nn.MSELoss()
    losses = []
    for epoch in range(100):
        y_pred = linear_regression(x)
        loss = criterion(y_pred, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return linear_regression, losses


class LinearRegression(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.linear = nnx.Linear(1, 1, rngs=rngs, dtype=dtype, param_dtype=dtype)

    def __call__(self, x):
        return self.linear(x)


def jitted_step_loop(model, x, y):
    """The same loop in JAX: a pure step function, compiled once, called 100 times."""
    optimizer = optax.sgd(0.2)
    graphdef, params = nnx.split(model)              # structure + a pytree of arrays
    opt_state = optimizer.init(params)

    def loss_fn(params, x, y):
        y_pred = nnx.merge(graphdef, params)(x)
        return jnp.mean((y_pred - y) ** 2)

    @jax.jit
    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)   # no .grad, no zero_grad
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for epoch in range(100):
        params, opt_state, loss = train_step(params, opt_state, x, y)
        losses.append(float(loss))                   # float() waits for the result
    return nnx.merge(graphdef, params), losses


def compiled_run(model, x, y):
    """The whole run as one program: lax.scan replaces the Python for loop."""
    optimizer = optax.sgd(0.2)
    graphdef, params = nnx.split(model)

    def loss_fn(params, x, y):
        return jnp.mean((nnx.merge(graphdef, params)(x) - y) ** 2)

    @jax.jit
    def run(params, x, y):
        def epoch(carry, _):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss
        (params, _), losses = jax.lax.scan(epoch, (params, optimizer.init(params)), length=100)
        return params, losses                        # losses: all 100, stacked by scan

    params, losses = run(params, x, y)
    return nnx.merge(graphdef, params), [float(v) for v in losses]


def test_tutorial_loop_jitted_step_and_compiled_run_fit_the_same_line():
    x, y = registry.make_data("linear_regression")      # numpy float64, (100, 1) each
    shared = registry.shared_init("linear_regression")  # {"linear.weight": (1, 1), "linear.bias": (1,)}
    init = {k.removeprefix("linear."): torch.as_tensor(v) for k, v in shared.items()}
    torch_model, torch_losses = tutorial_loop(torch.as_tensor(x), torch.as_tensor(y), init)
    fitted = {}
    with jax.enable_x64(True):
        for name, train in (("step", jitted_step_loop), ("scan", compiled_run)):
            model = LinearRegression(rngs=nnx.Rngs(0), dtype=jnp.float64)
            model.linear.kernel[...] = jnp.asarray(init["weight"].numpy().T)   # (out, in) -> (in, out)
            model.linear.bias[...] = jnp.asarray(init["bias"].numpy())
            model, losses = train(model, jnp.asarray(x), jnp.asarray(y))
            np.testing.assert_allclose(losses, torch_losses, rtol=1e-12)
            fitted[name] = (float(model.linear.kernel[0, 0]), float(model.linear.bias[0]))
    w, b = torch_model.weight.item(), torch_model.bias.item()
    for kernel, bias in fitted.values():
        assert kernel == pytest.approx(w, rel=1e-12) and bias == pytest.approx(b, rel=1e-12)
    assert abs(b - 7.5) < 0.3 and abs(w - 5.0) < 0.5    # about y = 7.5 + 5x: noise has mean 2.5
