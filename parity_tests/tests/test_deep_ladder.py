"""The parity ladder's single-computation rungs (2-5) for the deep examples, dropout on
in training mode, BatchNorm's running statistics compared as state: jaxport against
torch, float64 to 1e-10 relative, float32 against torch's own float32 error
(parity_tests/engine/rungs/ladder.py)."""

import pytest

from parity_tests.engine.rungs import ladder as dl

CELLS = [dl.Cell(e, "class", d, "cpu") for e in ("cnn", "lstm", "gru") for d in ("float32", "float64")]


# float64 in the second tier (make test's time); the planted deep bugs keep both dtypes in the first
@pytest.mark.parametrize("deep_cell", [pytest.param(c, marks=pytest.mark.slow) if c.dtype == "float64" else c
                                       for c in CELLS], ids=str)
def test_loss_and_eval_logits_at_init(deep_cell):
    dl.rung2_loss_at_init(deep_cell)


@pytest.mark.parametrize("deep_cell", CELLS, ids=str)
def test_gradients_at_init(deep_cell):
    dl.rung3_gradients_at_init(deep_cell)


@pytest.mark.parametrize("deep_cell", CELLS, ids=str)
def test_one_step(deep_cell):
    dl.rung4_one_step(deep_cell)


@pytest.mark.slow    # second tier: 45 s of teacher-forced steps; the planted deep bugs stay in the first
@pytest.mark.parametrize("deep_cell", CELLS, ids=str)
def test_teacher_forced_first_epoch(deep_cell):
    """The first epoch's 23 steps from torch's state, the last on a partial batch of 29
    images (`make test` compares steps 0-2 and 20-22; JAXPORT_FULL=1 every step)."""
    assert dl.rung5_teacher_forced(deep_cell) == 23


# float32 free runs need torch's variants (16 runs nudged a ulp a step, and float64):
# a minute per example on this 2-core machine (cnn's members vmapped; the recurrent
# ones in turn, torch.func has no batching rule for nn.LSTM / nn.GRU).
FREE = CELLS


@pytest.mark.slow    # second tier: the deep examples' free runs and their ensembles
@pytest.mark.parametrize("deep_cell", FREE, ids=str)
def test_free_running_and_fitted_model(deep_cell):
    """Rungs 6-7: the whole default run from the shared init on both backends, judged
    against torch's ensemble (free_runs.py), the fitted model on the held-out images."""
    dl.rung6_free_running(deep_cell)
    dl.rung7_fitted_model(deep_cell)
