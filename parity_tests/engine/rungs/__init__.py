"""The engine's rungs: the ladder's rungs 1-7 and the verdicts built from them (check_port, compare)."""
