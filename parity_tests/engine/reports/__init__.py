"""The engine's reports: the rows, the tables and docs/parity-cpu.md."""
