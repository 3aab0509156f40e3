"""jaxport's own guarantees: weight conversion, torch-like init, one compile per
configuration, import isolation, and torch's BCE clamp."""
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from scipy import stats

from portcore import registry, specs
from portcore.weights import WeightsError
from jaxport import convert, losses
from jaxport import training as jax_training
from jaxport.programs import DEFAULT
from torchref import training as torch_training

MODELS = [(ex, form) for ex in registry.TRAINABLE for form in registry.forms(ex)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("example,form", MODELS)
def test_conversion_round_trip_is_bit_exact(example, form, dtype):
    params = {k: v.astype(dtype) for k, v in registry.shared_init(example, seed=7).items()}
    model = jax_training.build_model(example, params, dtype=dtype, form=form)
    from flax import nnx
    state = nnx.state(model)
    back = convert.to_numpy(state, example, form)
    for name, value in params.items():
        assert back[name].dtype == value.dtype and np.array_equal(back[name], value), name
    # The layout really is transposed: torch's weight (out, in) is Flax's kernel (in, out).
    if example == "neural_network":
        kernel = nnx.to_pure_dict(state)["hidden_2" if form == "class" else "layers"]
        kernel = kernel["kernel"] if form == "class" else kernel[2]["kernel"]
        assert kernel.shape == (200, 100) and np.array_equal(np.asarray(kernel), params["hidden_2.weight"].T)


@pytest.mark.parametrize("example,form", MODELS)
def test_conversion_names_every_offending_parameter(example, form):
    from flax import nnx
    template = nnx.state(jax_training.build_model(example, form=form))
    params = registry.shared_init(example)
    first, *_, last = params
    broken = {k: v for k, v in params.items() if k != first}
    broken[last] = np.zeros((7, 7))
    broken["extra.weight"] = np.zeros(1)
    with pytest.raises(WeightsError) as info:
        convert.to_state(broken, template, example, form)
    message = str(info.value)
    assert f"missing {first}" in message and "unexpected extra.weight" in message
    assert f"{last} has shape (7, 7)" in message


def draws(backend, name, n_models):
    return np.concatenate([backend.default_params("neural_network", seed, dtype="float64")[name].ravel()
                           for seed in range(n_models)])


@pytest.mark.parametrize("name,fan_in", [("hidden_2.weight", 200), ("hidden_2.bias", 200), ("output.weight", 100)])
def test_default_init_has_torchs_distribution(name, fan_in):
    """Two-sample Kolmogorov-Smirnov test, jaxport's draws against torch's nn.Linear.

    H0: same distribution. We accept at p > 0.001, so a correct initialiser fails one
    run in a thousand (the draws are seeded, so the outcome is fixed in CI). Power
    check: the same test rejects Flax's default (lecun_normal) at p < 1e-6.
    """
    size = int(np.prod(registry.param_shapes("neural_network")[name]))
    n_models = -(-4000 // size)                               # at least 4,000 values each
    jax_values, torch_values = draws(jax_training, name, n_models), draws(torch_training, name, n_models)
    assert stats.ks_2samp(jax_values, torch_values).pvalue > 1e-3
    bound = 1 / np.sqrt(fan_in)
    assert np.abs(jax_values).max() <= bound and np.abs(jax_values).max() > 0.99 * bound
    from jax.nn import initializers
    import jax
    lecun = np.asarray(initializers.lecun_normal()(jax.random.key(0), (fan_in, len(torch_values) // fan_in + 1)))
    assert stats.ks_2samp(lecun.ravel(), torch_values).pvalue < 1e-6


def test_fit_compiles_once_per_configuration():
    example, config = "neural_network", registry.get("neural_network").defaults.replace(epochs=3, batch_size=30)
    x, y = registry.make_data(example, seed=1)
    before = DEFAULT.compile_count
    runs = [(registry.shared_init(example, seed), registry.make_data(example, seed=seed), shuffle)
            for seed, shuffle in ((1, False), (2, False), (3, True))]
    results = []
    for params, (x, y), shuffle in runs:
        order = specs.batch_order(len(x), config.epochs, shuffle, seed=4)
        results.append(jax_training.fit(example, params, x, y, order, config.replace(shuffle=shuffle),
                                        dtype="float32"))
    assert DEFAULT.compile_count == before + 1            # new data, weights, order: no recompile
    assert not np.array_equal(results[0].step_losses, results[1].step_losses)
    jax_training.fit(example, runs[0][0], x, y, specs.batch_order(len(x), 3, False),
                     config.replace(lr=0.02), dtype="float32")
    assert DEFAULT.compile_count == before + 2            # a new configuration compiles


@pytest.mark.parametrize("package,forbidden", [("jaxport", ("torch",)), ("torchref", ("jax", "flax", "optax"))])
def test_each_backend_imports_without_the_other(package, forbidden):
    modules = [f"{package}.{m}" for m in ("numerics", "convert", "training", "bce_from_primitives",
                                          "tensor_interop", *registry.TRAINABLE)]
    code = (f"import sys\nimport {', '.join(modules)}\n"
            f"bad = [m for m in sys.modules if m.split('.')[0] in {forbidden!r}]\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bce_clamps_like_torch_at_exactly_0_and_1(dtype):
    p = np.array([0.0, 1.0, 0.0, 1.0, 1e-30, 1 - 1e-7, 0.3])
    y = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    pt = torch.tensor(p, dtype=getattr(torch, dtype), requires_grad=True)
    per_sample = torch.nn.functional.binary_cross_entropy(pt, torch.tensor(y, dtype=pt.dtype), reduction="none")
    # A wrong saturated prediction costs exactly -(-100) = 100, a right one 0, never inf or nan.
    assert per_sample[:4].tolist() == [100.0, 100.0, 0.0, 0.0]
    per_sample.mean().backward()
    import jax
    from jaxport.numerics import dtype_scope
    with dtype_scope(dtype):         # float64 arrays need x64 for this block only
        _check_bce_against(p, y, dtype, per_sample, pt)


def _check_bce_against(p, y, dtype, per_sample, pt):
    import jax
    value, grad = jax.value_and_grad(losses.bce)(jnp.asarray(p, dtype), jnp.asarray(y, dtype))
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))
    np.testing.assert_allclose(float(value), per_sample.mean().item(), rtol=1e-6 if dtype == "float32" else 1e-12)
    np.testing.assert_allclose(np.asarray(grad), pt.grad.numpy(), rtol=1e-6 if dtype == "float32" else 1e-12)
    # The optax form takes logits and needs no clamp: the same loss where both are defined.
    logits = np.array([-2.0, 0.5, 3.0])
    labels = np.array([1.0, 0.0, 1.0])
    np.testing.assert_allclose(float(losses.bce_with_logits(jnp.asarray(logits, dtype), jnp.asarray(labels, dtype))),
                               float(losses.bce(jax.nn.sigmoid(jnp.asarray(logits, dtype)), jnp.asarray(labels, dtype))),
                               rtol=1e-5 if dtype == "float32" else 1e-12)
