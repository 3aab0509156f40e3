"""The parity suite's tests (pytest), the zoo's ports and the tests' model pairs."""
