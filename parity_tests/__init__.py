"""The parity suite (its tests in parity_tests/tests/) and the parity engine it runs
(parity_tests.engine, installed with the package).

- `parity_tests.engine`: the ladder's rungs, the float32 and float64 bounds, the
  ensembles of torch runs and the free-run criterion, the locator and the report,
  for the project's examples and for users' own ports;
- `parity_tests.harness`: the engine's public front for your own port
  (`check_port`, `locate_divergence`);
- `python -m parity_tests check ...`: the same as a command (exit 0 agree, 1 differ,
  2 bad input);
- tests/: the test files, the zoo's ports and the tests' model pairs, which import
  everything package-qualified (`from parity_tests.engine.rungs import ladder`);
  tests/conftest.py pins the numerics.
"""
