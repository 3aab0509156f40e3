"""The roof of the house: the command line `python -m examples` (run, compare, bench,
data, init, list), the figures, the benchmark, and the harness's runnable example port
(own_port.py). The examples' specs, data and weights live in `portcore`, below both
backends; the parity judgement `compare` prints comes from `parity_tests.engine`.

Nothing here imports torch or jax at module level; the command line imports the
backends lazily, so each backend can be used without the other installed.
"""
