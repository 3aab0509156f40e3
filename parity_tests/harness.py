"""Check your own port: the parity engine's public front (docs/check-your-own-port.md).

    from parity_tests.harness import check_port, locate_divergence
    report = check_port(torch_model, nnx_model, x, y, loss="mse", optimizer="adam")
    assert report.passed, report.markdown()
"""
from parity_tests.engine.rungs.harness import PortInputError, PortReport, check_port, locate_divergence

__all__ = ["check_port", "locate_divergence", "PortReport", "PortInputError"]
