"""The neutral core below both backends: the examples' specs and data, the exchange
format of weights (numpy arrays under PyTorch names), the long-run schedule, and the
layer kinds with their one torch <-> Flax converter. Imports numpy only: never torch,
jax, flax or optax, and nothing from `jaxport`, `torchref`, `examples` or the suite.
"""
