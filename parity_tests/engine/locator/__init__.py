"""The engine's locator: which layer a difference arises in."""
