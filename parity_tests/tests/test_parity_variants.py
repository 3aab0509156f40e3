"""The ladder's rungs 4-7 (one step, teacher-forced, free-running, fitted model) on
training configurations beyond the tutorial's: minibatches with a partial last batch,
shuffled, SGD with and without momentum, and Adam. Class form only (the Sequential
form's arithmetic is the class form's, and the default ladder covers both forms). The
network's variants run 25-100 epochs (100 steps) instead of 1000, to keep the suite fast.
"""
import pytest

from parity_tests.engine.rungs import ladder
from portcore import registry, specs

# The second tier (`make test-all`): the free-run ensembles of the shuffled, SGD and momentum variants.
pytestmark = pytest.mark.slow

REGRESSIONS = ("linear_regression", "logistic_regression")
NETWORK = ("neural_network",)


def run_variant(cell, label, **changes) -> None:
    run = ladder.Run(label, registry.get(cell.example).defaults.replace(**changes))
    ladder.rung4_one_step(cell, run)
    steps = ladder.rung5_teacher_forced(cell, run)
    assert steps == run.config.epochs * specs.steps_per_epoch(len(ladder.data(cell.example)[0]),
                                                               run.config.batch_size)
    ladder.rung6_free_running(cell, run)
    ladder.rung7_fitted_model(cell, run)


def epochs(cell, network_epochs: int) -> int:
    record = registry.get(cell.example)
    return network_epochs if record.variant_epochs is not None else record.defaults.epochs


@pytest.mark.parity_cells(forms=("class",))
def test_shuffled_minibatch_run(cell):
    """Batch 30 of 100 samples, a new permutation every epoch (drawn once in
    portcore.specs): four steps an epoch, the last on 10 samples (drop_last=False),
    which jaxport pads to 30 with zero weights inside its compiled loop."""
    run_variant(cell, "batch 30, shuffled", batch_size=30, shuffle=True, epochs=epochs(cell, 25))


@pytest.mark.parity_cells(forms=("class",))
def test_sgd_momentum_run(cell):
    """SGD with momentum 0.9: torch's momentum buffer is optax's trace (dampening 0)."""
    run_variant(cell, "SGD momentum 0.9", optimizer="sgd", momentum=0.9, epochs=epochs(cell, 100))


@pytest.mark.parity_cells(examples=NETWORK, forms=("class",))
def test_plain_sgd_run(cell):
    """Plain SGD on the network (the regressions run plain SGD in the default ladder)."""
    run_variant(cell, "SGD", optimizer="sgd", epochs=100)


@pytest.mark.parity_cells(examples=REGRESSIONS, forms=("class",))
def test_adam_run(cell):
    """Adam on the regressions (the network runs Adam in the default ladder)."""
    run_variant(cell, "Adam lr 0.1", optimizer="adam", lr=0.1)
