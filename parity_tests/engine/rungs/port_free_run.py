"""The free-running rungs for any port (6: the whole run, 7: the fitted model), judged
by the suite's portable criterion (criterion.py) against an ensemble of torch runs
moved one ulp per parameter after every update (ensemble.py's rule, here for any
module: the members run one after another instead of vmapped, since a user's module
may hold BatchNorm buffers). One generalisation: a moved member also takes each
batch's rows in a random order, so the ensemble holds the batch sums' float32 rounding
too (an LSTM's gradients sum over rows and time steps; moving the parameters alone
underestimated that: a correct float32 LSTM port's fitted input kernel differed from
torch's by 1.1e-6, more than 4 x such an ensemble's spread). In float32 one more
member is torch's run in float64 from the same float32 weights: torch's own float32
error, which another implementation's elementwise functions (XLA's tanh and logistic
are a few ulps from torch's, at every step) reach even where one-ulp moves of the
parameters do not (measured: the lstm example's own models, 3 Adam steps of batch 32,
fitted weights 1.1-2.4 x farther from torch's than any ulp-moved member; the deep
examples' free runs use the same member, deep_free_run.py).
"""
from __future__ import annotations

import numpy as np
import torch

from parity_tests.engine.bounds import criterion
from parity_tests.engine.rungs.port_rungs import PortRun
from parity_tests.engine.sides.port_losses import CLASS_AXIS
from parity_tests.engine.sides.port_models import torch_arrays
from parity_tests.engine.sides.port_torch import Teacher

MEMBERS = 16


def _ulp_step(model, generator: torch.Generator) -> None:
    """Every parameter one ulp up or down at random, in place (ensemble._ulp_step)."""
    with torch.no_grad():
        for p in model.parameters():
            sign = torch.randint(0, 2, p.shape, generator=generator, dtype=p.dtype).mul_(2).sub_(1)
            p.copy_(torch.nextafter(p, p + sign))


def torch_runs(run: PortRun, members: int = MEMBERS, seed: int = 0) -> tuple:
    """torch's own run and the ensemble, whose member 0 is that run (unmoved) and the
    others are moved: (losses (steps,), fitted arrays, member losses (M, steps), member
    fitted arrays)."""
    generator, rows = torch.Generator().manual_seed(seed), np.random.default_rng([seed, 9])
    results = []
    for member in range(members):              # member 0 unmoved: torch's run itself
        teacher = Teacher(run.side)
        losses = []
        for idx in run.batches:
            # a moved member also sums each batch in another row order (the same mean):
            # float32 batch sums round differently in another implementation
            idx = rows.permutation(idx) if member > 0 else idx
            losses.append(teacher.step(run.x[idx], run.y[idx])[0])
            if member > 0:
                _ulp_step(teacher.model, generator)
        results.append((np.array(losses), teacher.state()[0]))
    if run.dtype == "float32":
        results.append(_float64_run(run))
    return results[0][0], results[0][1], np.array([r[0] for r in results]), [r[1] for r in results]


def _float64_run(run: PortRun) -> tuple:
    """torch's run in float64 from the float32 start: (losses, fitted arrays)."""
    model = run.side.model(run.port_init, "float64")
    optimizer = run.side.optimizer(model)
    losses = [run.side.step(model, optimizer, run.x[idx], run.y[idx])[0] for idx in run.batches]
    return np.array(losses), torch_arrays(model)


def nnx_run(run: PortRun) -> tuple:
    """NNX's own run from the shared weights: (losses, fitted params, fitted rest)."""
    params, rest, state, losses = run.runner.params(), run.runner.rest, None, []
    for idx in run.batches:
        loss, _, params, rest, state = run.runner.step(params, run.x[idx], run.y[idx], rest=rest,
                                                       opt_state=state if state is not None else None)
        losses.append(loss)
    return np.array(losses), params, rest


def free_run(run: PortRun) -> dict:
    """Both runs, the ensemble and the horizon (cached on the run: rungs 6 and 7 share it)."""
    if run.free is None:
        t_losses, t_fitted, m_losses, m_fitted = torch_runs(run)
        j_losses, j_params, j_rest = nnx_run(run)
        spread = criterion.spread(m_losses, t_losses)
        run.free = dict(torch=(t_losses, t_fitted), members=(m_losses, m_fitted), jax=(j_losses, j_params, j_rest),
                         spread=spread, horizon=criterion.horizon(spread, t_losses, run.dtype), steps=len(t_losses))
    return run.free


def rung6_free_running(run: PortRun) -> None:
    """Per-step losses up to the horizon; after it, the loss statistics; the fitted
    parameters (on NNX's paths) and running statistics entry by entry or as one more
    draw of the ensemble: criterion.judge_losses and judge_fitted, the ladder's own
    judgement (free_run.py calls them too)."""
    v = free_run(run)
    (t, t_fitted), (m, m_fitted), j = v["torch"], v["members"], v["jax"]
    h = criterion.judge_losses(_checker(run, 6), j[0], t, m, run.dtype)
    chaotic = h < v["steps"]
    on_nnx = lambda arrays: run.texts({p: v for p, v in run.port.to_nnx(arrays).items() if p in run.runner.shapes})  # noqa: E731
    # float32: the last member is torch in float64 from the same start (_float64_run)
    exact = on_nnx(m_fitted[-1]) if run.dtype == "float32" else None
    criterion.judge_fitted(_checker(run, 6), run.texts(j[1]), on_nnx(t_fitted), [on_nnx(a) for a in m_fitted],
                           chaotic, run.dtype, "fitted parameters", exact)
    # running statistics (BatchNorm's mean and var): torch's buffers converted, NNX's rest
    stats = lambda arrays: {p: v for p, v in run.port.to_nnx(arrays).items() if p not in run.runner.shapes}  # noqa: E731
    t_stats = stats(t_fitted)
    if t_stats:
        criterion.judge_fitted(_checker(run, 6), run.texts(run.runner.rest_arrays(j[2], set(t_stats))),
                               run.texts(t_stats), [run.texts(stats(a)) for a in m_fitted], chaotic, run.dtype,
                               "fitted running statistics",
                               run.texts(stats(m_fitted[-1])) if run.dtype == "float32" else None)


def _checker(run: PortRun, rung: int):
    """criterion's `check`: the run's own, recording and going on after a failure."""
    return lambda actual, expected, **c: run.check(actual, expected, rung=rung, **c)


def fitted_model(run: PortRun, predictions: np.ndarray, final_loss: float) -> dict:
    """Rung 7's quantities: a side's loss and predictions on the data (eval mode)."""
    out = {"final loss": float(final_loss), "predictions": np.asarray(predictions, np.float64)}
    if run.objective is not None and run.objective.name in CLASS_AXIS:
        # torch's layout: classes on axis 1 ((N, C, d1, ...) against (N, d1, ...)),
        # ignored targets left out, as the loss leaves them out
        keep = run.y != run.objective.options.get("ignore_index", -100)
        guess = np.argmax(predictions, axis=1)
        out["accuracy"] = float(np.mean(guess[keep] == run.y[keep])) if keep.any() else 1.0
    elif run.loss_name in ("bce", "bce_with_logits"):
        guess = (predictions > (0.0 if run.loss_name == "bce_with_logits" else 0.5)).astype(run.y.dtype)
        out["accuracy"] = float(np.mean(guess == run.y))
    return out


def rung7_fitted_model(run: PortRun) -> None:
    v = free_run(run)
    side, x, y = run.side, run.x, run.y
    t = fitted_model(run, side.predict(v["torch"][1], x), side.eval_loss(v["torch"][1], x, y))
    j = fitted_model(run, run.port.output_in_torch_layout(run.runner.predict(v["jax"][1], x, rest=v["jax"][2])),
                     run.runner.eval_loss(v["jax"][1], x, y, rest=v["jax"][2]))
    members = [fitted_model(run, side.predict(a, x), side.eval_loss(a, x, y)) for a in v["members"][1]]
    # float32: torch's float64 run (the last member) evaluated in float64, for the
    # judgement against float64 (MKL's COMPATIBLE path moved a correct lstm port's
    # fitted predictions to 1.32 of the ensemble's per-entry bound)
    exact = _float64_model(run, v["members"][1][-1]) if run.dtype == "float32" else None
    criterion.judge_fitted(_checker(run, 7), j, t, members, v["horizon"] < v["steps"], run.dtype, "fitted model",
                           exact)


def _float64_model(run: PortRun, arrays: dict) -> dict:
    """Rung 7's quantities of a fitted torch model, computed in float64."""
    out = run.side.outputs(run.side.model(arrays, "float64"), run.x, "float64")
    return fitted_model(run, out, run.side.eval_loss(arrays, run.x, run.y, "float64"))
