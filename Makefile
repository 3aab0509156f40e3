# `make demo` and `make test` each build .venv from constraints.txt on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
OUT    ?= out
# From the example registry (portcore/registry.py), read once the venv exists.
TRAINABLE = $(shell $(PY) -m examples list --trainable)
DEMOS     = $(shell $(PY) -m examples list --demos)

.PHONY: demo test test-all bench report portability docs clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

# Every example on both backends: GIF, plot and history JSON per trainable example.
demo: $(STAMP)
	@test -n "$(TRAINABLE)" || { echo "error: python -m examples list --trainable listed nothing" >&2; exit 1; }
	@mkdir -p $(OUT)
	@set -e; for be in torch jax; do \
	  for ex in $(DEMOS); do echo "== $$ex ($$be)"; \
	    $(PY) -m examples run $$ex --backend $$be --history $(OUT)/$$ex-$$be.json; done; \
	  for ex in $(TRAINABLE); do echo "== $$ex ($$be)"; \
	    $(PY) -m examples run $$ex --backend $$be --gif $(OUT)/$$ex-$$be.gif \
	      --plot $(OUT)/$$ex-$$be.png --history $(OUT)/$$ex-$$be.json; done; \
	done
	@echo "== parity at a glance (float64, shared init)"
	@$(PY) -m examples compare neural_network --dtype float64 --quiet
	@echo "demo outputs in $(OUT)/"

# Two tiers over pytest-xdist, one worker per CPU: `make test` the fast tier, everything
# not marked slow; `make test-all` that, then the long evidence (free-run ensembles,
# DDP, faults, resume, the zoo). CI runs `make test-all`. The fast tier's workers steal
# tests from each other: a fresh clone on 2 cores, 4:44 of pytest against 5:19 with
# whole files per worker (an idle worker waited on the other's last file). The second
# tier keeps a file's tests on one worker, which keeps its cached ensembles.
XDIST := -n logical
test: $(STAMP)
	$(PY) -m pytest -q $(XDIST) --dist worksteal -m "not slow" parity_tests

test-all: test
	$(PY) -m pytest -q $(XDIST) --dist loadfile -m slow parity_tests

# The tables go into README.md and docs/speed.md only from a quiet machine
# (examples/bench_tables.py); `make bench BENCH_FLAGS=--force` writes them anyway, saying the load.
BENCH_FLAGS ?=
bench: $(STAMP)
	@mkdir -p $(OUT)
	$(PY) -m examples bench --json $(OUT)/bench-cpu.json --write-tables $(BENCH_FLAGS)

# One process: the report is written from the whole session's record of comparisons.
report: $(STAMP)
	JAXPORT_REPORT=docs/parity-cpu.md $(PY) -m pytest -q parity_tests

# The free-run verdicts on >= 40 simulated machines (MKL paths x threads x jaxport's
# start, and 10 more initial weights), planted bugs on each: docs/portability-cpu.json,
# which `make report` renders into docs/parity-cpu.md. About 30 minutes on 2 cores.
portability: $(STAMP)
	$(PY) -m parity_tests.portability

docs: $(STAMP)
	$(PY) docs/build.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
