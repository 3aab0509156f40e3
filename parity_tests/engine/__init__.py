"""The parity engine: every judgement the suite, `compare` and `check_port` make.

- parity.py: one comparison (parity.check), its row, the record, the float64 table;
- step_noise.py, criterion.py, ensemble.py: the float32 single-step bound, the
  free-run criterion (horizon, then statistics) and the torch ensemble it needs;
- ladder.py, teacher.py, free_run.py, runs.py, gate.py: the ladder over the project's
  examples through the backends' contract (`training.py`), and `compare`'s verdict;
- deep_ladder.py, deep_free_run.py, deep_gate.py: the same for the examples with
  state (cnn, lstm, gru: BatchNorm statistics, the dropout counter);
- harness.py and port_*.py, locate*.py: the ladder over any (torch.nn.Module,
  nnx.Module) pair (port_losses.py and port_optax.py: losses and optimizers written
  twice with torch's semantics; port_exact.py: float32 judged against float64), and
  the locator; the project's own examples pass through it too
  (test_engine_agreement.py);
- report.py, report_free_runs.py: docs/parity-cpu.md.

Every module imports the others package-qualified (`from parity_tests.engine import
parity`); none imports a test file.
"""
