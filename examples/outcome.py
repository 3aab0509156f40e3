"""Did a training run diverge? One answer for `run` and `compare`, from a FitResult of
either backend (framework-neutral: numpy only)."""
from __future__ import annotations

import numpy as np

from portcore import specs

DIVERGED = 3          # the command line's exit status for a run that diverged


def steps_per_epoch(result: specs.FitResult) -> int:
    epochs = len(result.epoch_losses)
    return len(result.step_losses) // epochs if epochs else 0


def nonfinite_params(result: specs.FitResult) -> list[str]:
    return [name for name, value in result.params.items() if not np.all(np.isfinite(value))]


def first_nonfinite_step(result: specs.FitResult) -> int | None:
    """0-based index of the first step whose loss is inf or NaN; if every loss is finite
    but the fitted parameters are not, the last step (its update made them so: a
    non-finite parameter shows in the next step's loss). None: the run stayed finite.

    Parameters are only seen at the end of the run, so a parameter that goes non-finite
    without touching the loss (a dead ReLU unit) is dated to the last step.
    """
    step = result.nonfinite_loss_step
    if step is None and result.recorded_epochs is None:       # e.g. a FitResult built by hand
        bad = ~np.isfinite(np.asarray(result.step_losses))
        step = int(np.argmax(bad)) if bad.any() else None
    if step is None and nonfinite_params(result):
        epochs = result.epochs_run if result.epochs_run is not None else len(result.epoch_losses)
        step = max(epochs * steps_per_epoch(result) - 1, 0)
    return step


def describe(result: specs.FitResult, step: int, per_epoch: int, epochs: int, lr: float) -> str:
    """One line for the user: where the run diverged and what to try."""
    bad = nonfinite_params(result)
    what = ("the loss became inf or NaN" if result.nonfinite_loss_step == step or not bad
            else "the parameters became inf or NaN (" + ", ".join(bad) + ")")
    stopped = (f", stopped after epoch {result.epochs_run} of {epochs}"
               if result.epochs_run is not None and result.epochs_run < epochs else "")
    return (f"training diverged at step {step + 1} (epoch {step // per_epoch + 1}): {what}{stopped}; "
            f"nothing was saved. Try a smaller --lr (this run: {lr:g})")
