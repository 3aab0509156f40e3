"""The engine's sides: the two programs compared: a torch side and a JAX side (models, losses, optimizers, the examples' runs)."""
