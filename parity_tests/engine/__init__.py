"""The parity engine: every judgement the suite, `compare` and `check_port` make.

- parity.py: one comparison (parity.check), its row, the record, the float64 table;
- sides/: the two programs compared. A torch side and a JAX side for a user's model
  pair (port_models, port_torch, port_nnx; losses and optimizers written twice with
  torch's semantics: port_losses, port_optax, port_objectives) and for the project's
  examples through the backends' contract (runs, teacher);
- rungs/: the ladder's rungs over two sides (port_rungs, port_free_run for any pair;
  ladder, free_run and deep_ladder, deep_free_run for the examples), check_port
  (harness) and compare's verdict (gate, deep_gate);
- bounds/: the tolerances. The float32 step bound (step_noise), the judgement against
  float64 (port_exact), the torch ensemble (ensemble) and the free-run criterion
  (criterion: horizon, then statistics);
- locator/: which layer a difference arises in (locate, locate_trace);
- reports/: check_port's table (port_report) and docs/parity-cpu.md (report,
  report_free_runs);
- port_cli.py: `python -m parity_tests check`.

Every module imports the others package-qualified (`from parity_tests.engine.bounds
import criterion`); none imports a test file (parity_tests/tests/).
"""
