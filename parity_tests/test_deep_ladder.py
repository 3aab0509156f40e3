"""The parity ladder's single-computation rungs (2-5) for the deep examples, dropout on
in training mode, BatchNorm's running statistics compared as state: jaxport against
torch, float64 to 1e-10 relative, float32 against torch's own float32 error
(parity_tests/deep_ladder.py)."""
import pytest

import deep_ladder as dl

CELLS = [dl.DeepCell(e, d) for e in ("cnn", "lstm", "gru") for d in ("float32", "float64")]


@pytest.mark.parametrize("deep_cell", CELLS, ids=str)
def test_loss_and_eval_logits_at_init(deep_cell):
    dl.rung2_loss_at_init(deep_cell)


@pytest.mark.parametrize("deep_cell", CELLS, ids=str)
def test_gradients_at_init(deep_cell):
    dl.rung3_gradients_at_init(deep_cell)


@pytest.mark.parametrize("deep_cell", CELLS, ids=str)
def test_one_step(deep_cell):
    dl.rung4_one_step(deep_cell)


@pytest.mark.parametrize("deep_cell", CELLS, ids=str)
def test_teacher_forced_first_epoch(deep_cell):
    """The first epoch's 23 steps, the last on a partial batch of 29 images."""
    assert dl.rung5_teacher_forced(deep_cell) == 23
