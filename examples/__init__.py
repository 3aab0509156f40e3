"""Framework-neutral specs of the tutorial's examples: data, hyperparameters, shared
initial weights and batch order, plus the `python -m examples` command line.

Nothing here imports torch or jax at module level; the command line imports the
backends lazily, so each backend can be used without the other installed.
"""
