"""The parity engine: every judgement the suite, `compare` and `check_port` make.

- parity.py: one comparison (parity.check), its row, the record, the float64 table;
- sides/: the two programs compared. The reference is torch (port_torch.TorchSide, over
  any module); the candidate starts each step from torch's state: a user's NNX model
  (port_candidate over port_models and port_nnx, built from check_port's three specs
  by port_setup; losses and optimizers on both sides with torch's semantics:
  port_losses, port_objectives over jaxport.optim) or jaxport's own compiled step and
  whole run for the project's examples (example_sides; their runs and caches: runs);
- rungs/: rungs 2-5 once over two sides (port_rungs; one step's comparison:
  step_compare), rungs 6-7 once (free_runs), the examples' runs (ladder: rung 1 and
  the sides it builds), and check_port's loop over the rungs (harness), which
  `compare` runs too;
- bounds/: the tolerances. The float32 step bound (step_noise; a step's plan of
  tolerances: step_bounds), the judgement against
  float64 (port_exact), the torch ensemble (ensemble) and the free-run criterion
  (criterion: horizon, then statistics);
- locator/: which layer a difference arises in (locate, locate_trace);
- reports/: check_port's table (port_report) and docs/parity-cpu.md (report,
  report_free_runs);
- port_cli.py: `python -m parity_tests check`.

Every module imports the others package-qualified (`from parity_tests.engine.bounds
import criterion`); none imports a test file (parity_tests/tests/).
"""
