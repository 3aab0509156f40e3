"""The suite can fail: small bugs planted in jaxport by monkeypatching, each of which the
ladder's own comparisons (parity.check) must catch, in float32 and in float64.

jaxport caches compiled functions and programs, so every planted bug starts and ends by
clearing them (ladder.clear_jax_caches); torch's cached reference runs stay valid, since
no bug touches torchref. Rungs run in order until the first one catches the bug; the
report lists, per bug and dtype, the rungs that passed and the one that caught it.
"""
import functools

import numpy as np
import pytest

import jaxport.convert as jc
import jaxport.losses as jl
import jaxport.optim as jo
from parity_tests.engine.rungs import ladder
from parity_tests.engine import parity
from parity_tests.engine.rungs.saturated import check_saturated_bce


def _optimizer_bug(monkeypatch, **changes):
    """jaxport's make_optimizer, given a config with some fields changed (SGD ignores betas)."""
    make = jo.make_optimizer

    def planted(config):
        return make(config.replace(**{k: change(config) for k, change in changes.items()}))
    monkeypatch.setattr(jo, "make_optimizer", planted)


def lr_off(monkeypatch):
    _optimizer_bug(monkeypatch, lr=lambda c: c.lr * (1 + 1e-4))


def adam_b2(monkeypatch):
    _optimizer_bug(monkeypatch, betas=lambda c: (c.betas[0], 0.998))


def adam_eps_inside_root(monkeypatch):
    """optax.adam(eps=0, eps_root=eps): eps moved under the square root."""
    import optax
    make = jo.make_optimizer

    def planted(config):
        if config.optimizer != "adam":
            return make(config)
        b1, b2 = config.betas
        return optax.adam(config.lr, b1=b1, b2=b2, eps=0.0, eps_root=config.eps)
    monkeypatch.setattr(jo, "make_optimizer", planted)


def adam_bias_correction_in_float32(monkeypatch):
    """optax.adam's arithmetic without x64: 1 - b**t computed in float32 (1 - float32(0.999)
    is 1.3e-5 relative off), where torch computes it in Python double."""
    import jaxport.optim as jo

    def planted(lr, b1, b2):
        t = np.arange(jo.TABLE_CAP if max(b1, b2) > 0.99999 else 50_000, dtype=np.float32)
        bc1 = np.float32(1) - np.float32(b1) ** t
        bc2 = np.float32(1) - np.float32(b2) ** t
        with np.errstate(divide="ignore"):
            return (np.where(t > 0, np.float32(lr) / bc1, lr).astype(np.float64),
                    np.where(t > 0, np.sqrt(bc2), 1.0).astype(np.float64))
    monkeypatch.setattr(jo, "bias_correction_table", planted)


def _reshaped(weight: np.ndarray) -> np.ndarray:
    """A (out, in) weight from the (in, out) kernel by reshape instead of transpose."""
    return np.ascontiguousarray(weight.T).reshape(weight.shape)


def transpose_on_export(monkeypatch):
    to_numpy = jc.to_numpy

    @functools.wraps(to_numpy)
    def planted(state, example, form="class"):
        return {n: _reshaped(v) if n.endswith(".weight") else v for n, v in to_numpy(state, example, form).items()}
    monkeypatch.setattr(jc, "to_numpy", planted)


def transpose_on_import(monkeypatch):
    to_state = jc.to_state

    @functools.wraps(to_state)
    def planted(params, template, example, form="class", dtype=None):
        # to_state transposes; hand it what makes the kernel the weight merely reshaped
        params = {n: np.asarray(v).reshape(np.shape(v)[::-1]).T if n.endswith(".weight") else v
                  for n, v in params.items()}
        return to_state(params, template, example, form, dtype)
    monkeypatch.setattr(jc, "to_state", planted)


def no_bce_clamp(monkeypatch):
    monkeypatch.setattr(jl, "LOG_CLAMP", -np.inf)


# name -> (plant, examples whose ladder runs, extra checks run first)
BUGS = {
    "learning rate 1e-4 relative too high": (lr_off, ("linear_regression", "neural_network"), ()),
    "Adam b2 0.998 instead of 0.999": (adam_b2, ("neural_network",), ()),
    "Adam eps moved inside the square root": (adam_eps_inside_root, ("neural_network",), ()),
    "Adam bias correction computed in float32": (adam_bias_correction_in_float32, ("neural_network",), ()),
    "missing transpose, weights out (convert.to_numpy)": (transpose_on_export, ("neural_network",), ()),
    "missing transpose, weights in (convert.to_state)": (transpose_on_import, ("neural_network",), ()),
    "BCE log clamp removed (losses.LOG_CLAMP)": (no_bce_clamp, ("logistic_regression",), ("bce",)),
}
# A bias correction 1.3e-5 relative off moves a float32 weight by a few ulps of its own
# value: torch.testing's float32 atol (1e-5) cannot see it, the step_noise bound must.
# Every bug is caught at the first rung that can see it (the same before and after the
# engine's rungs 2-5 became one set over two sides): a weight exported transposed by
# rung 3's gradients, one imported transposed by rung 2's loss and outputs.
CAUGHT_AT = {"Adam bias correction computed in float32": 4, "learning rate 1e-4 relative too high": 4,
             "Adam b2 0.998 instead of 0.999": 4, "Adam eps moved inside the square root": 4,
             "missing transpose, weights out (convert.to_numpy)": 3, "missing transpose, weights in (convert.to_state)": 2}
RUNGS = {1: ladder.rung1_identical_inputs, 2: ladder.rung2_loss_at_init, 3: ladder.rung3_gradients_at_init,
         4: ladder.rung4_one_step, 5: functools.partial(ladder.rung5_teacher_forced, max_steps=20),
         6: ladder.rung6_free_running, 7: ladder.rung7_fitted_model, "bce": check_saturated_bce}


def hunt(cell, rungs, full=False) -> list:
    """Run the rungs in order; [(rung, None or the ParityError's message)] up to the first
    catch (or all of them with full=True)."""
    results = []
    for rung in rungs:
        try:
            with parity.recording():
                RUNGS[rung](cell)
            results.append((rung, None))
        except parity.ParityError as error:
            results.append((rung, str(error)))
            if not full:
                break
    return results


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bug", list(BUGS))
def test_planted_bugs_are_caught(bug, dtype, monkeypatch, parity_record):
    plant, examples, extra = BUGS[bug]
    ladder.clear_jax_caches()
    try:
        plant(monkeypatch)
        found = {}
        for example in examples:
            cell = ladder.Cell(example, "class", dtype, "cpu")
            # the clamp bug: show the whole ladder is blind to it, only the BCE check sees it
            found[example] = hunt(cell, [*extra, 2, 3, 4, 5, 6, 7], full=bool(extra))
    finally:
        monkeypatch.undo()
        ladder.clear_jax_caches()
    parity_record.facts.setdefault("planted", []).append((bug, dtype, found))
    for example, results in found.items():
        caught = [rung for rung, error in results if error]
        assert caught, f"{bug} ({dtype}) passed every rung of {example}: {results}"
        if bug in CAUGHT_AT:            # bugs of one step's scale: the single-step rungs see them
            assert caught[0] == CAUGHT_AT[bug], f"{bug} ({dtype}) caught at {caught[0]}: {results}"
