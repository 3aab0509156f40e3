"""The parity ladder (docs/design.md), one test per rung, for every example, form, dtype and
device: jaxport against the torch reference, at the default (the tutorial's) run.
neural_network's rungs 5-7 (1000 steps each way, its float32 and float64 ensembles:
80 s of the first tier's 12 min of test time) are in the second tier; its planted bugs
stay in the first (test_parity_planted_bugs.py)."""
import pytest

from parity_tests.engine.rungs import ladder

SECOND_TIER = pytest.mark.parity_cells(slow=("neural_network",))


def test_identical_inputs(cell):
    """Rung 1: both backends receive the same data, initial weights and batch order."""
    ladder.rung1_identical_inputs(cell)


def test_loss_at_init(cell):
    """Rung 2: the loss (and the model's output) at the shared initial weights."""
    ladder.rung2_loss_at_init(cell)


def test_gradients_at_init(cell):
    """Rung 3: the gradient of every parameter at the shared initial weights."""
    ladder.rung3_gradients_at_init(cell)


def test_one_step(cell):
    """Rung 4: loss, gradients, parameters and optimizer state after one step from a
    fresh optimizer, and after a second step from torch's state."""
    ladder.rung4_one_step(cell)


@SECOND_TIER
def test_teacher_forced(cell):
    """Rung 5: every step of the full default run, both from torch's state."""
    steps = ladder.rung5_teacher_forced(cell)
    config = ladder.default_run(cell.example).config
    assert steps == config.epochs * -(-len(ladder.data(cell.example)[0]) // config.batch_size)


@SECOND_TIER
def test_free_running(cell):
    """Rung 6: the whole run's per-step losses up to the horizon, then its outcome, against
    torch's own perturbation ensemble (criterion.py), in both dtypes."""
    ladder.rung6_free_running(cell)


@SECOND_TIER
def test_fitted_model(cell):
    """Rung 7: the fitted model's final loss, predictions on the data, and accuracy."""
    ladder.rung7_fitted_model(cell)
