"""The backend contract: jaxport/training.py and torchref/training.py define the same
public names with the same signatures, and each is a working twin of the other
(docs/design.md, "The backend contract"). Backend-only helpers live in other modules."""
import inspect

import numpy as np
import pytest

import jaxport.training as jt
import torchref.training as tt
from portcore import registry

CONTRACT = {"build_model", "default_params", "loss_and_grads", "predict", "train_step",
            "Stepper", "stepper", "fit", "clear_caches"}


def public(module) -> dict:
    """Functions and classes the module defines itself (imports excluded)."""
    return {n: v for n, v in vars(module).items() if not n.startswith("_")
            and (inspect.isfunction(v) or inspect.isclass(v)) and v.__module__ == module.__name__}


def test_both_training_modules_define_exactly_the_contract():
    assert set(public(jt)) == CONTRACT
    assert set(public(tt)) == CONTRACT


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_signatures_match(name):
    def signature(obj):
        target = obj.__init__ if inspect.isclass(obj) else inspect.unwrap(obj)
        return [(p.name, p.kind, p.default) for p in inspect.signature(target).parameters.values()]
    assert signature(public(jt)[name]) == signature(public(tt)[name])
    if inspect.isclass(public(jt)[name]):
        methods = lambda cls: {n for n, v in vars(cls).items() if inspect.isfunction(v) and not n.startswith("_")}  # noqa: E731
        assert methods(public(jt)[name]) == methods(public(tt)[name])


@pytest.mark.parametrize("backend", [jt, tt], ids=["jax", "torch"])
def test_a_stepper_equals_train_step_and_continues_from_its_own_state(backend):
    example = "neural_network"
    config = registry.get(example).defaults
    params = registry.shared_init(example)
    x, y = registry.make_data(example)
    first = backend.train_step(example, params, None, x[:30], y[:30], config, dtype="float64")
    second = backend.train_step(example, first[2], first[3], x[30:60], y[30:60], config, dtype="float64")
    s = backend.stepper(example, config, params, dtype="float64")
    for expected, got in zip((first, second), (s.step(x[:30], y[:30]), s.step(x[30:60], y[30:60]))):
        assert got[0] == expected[0]
        for a, b in zip(expected[1:], got[1:]):
            assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    s.load(first[2], first[3])                         # back one step: the same second step
    assert s.step(x[30:60], y[30:60])[0] == second[0]
