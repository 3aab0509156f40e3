"""torch's BCE semantics in jaxport at saturated inputs, where the ladder's data never go."""
import pytest

from parity_tests.engine.rungs.saturated import check_saturated_bce


@pytest.mark.parity_cells(examples=("logistic_regression",))
def test_bce_saturated_matches_torch(cell):
    """p exactly 0 and 1 (each log clamped at -100) and one ulp inside them; the gradient
    is torch's (p - y) / max(p (1 - p), 1e-12), finite where the clamped logs are flat."""
    check_saturated_bce(cell)
