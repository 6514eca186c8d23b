# Set-up and everyday commands. `make demo` and `make test` work on a fresh clone:
# they create .venv, install the project with its dev extras (the independent attack
# implementations the cross-check tests compare with, and Opacus for the DP-SGD teachers), then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo reproduce test test-fast lint typecheck format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev,bench,privacy]'
	touch $(STAMP)

install: $(STAMP)

# Writes results/demo/ (ignored by git), never the committed reference tables in results/.
demo: $(STAMP)
	$(BIN)/defdistill demo --results-dir results/demo

# Papernot et al.'s temperature study on digits: runs/, then results/ with REPORT.md and plots.
reproduce: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" experiments/temperature_sweep.sh digits -j 2

# Everything CI checks: lint, types, the layers contract (tests/test_architecture.py), the suite.
test: lint typecheck
	$(BIN)/python -m pytest

# The inner loop: the suite without the tests marked slow (sweeps, privacy, long attacks).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q

lint: $(STAMP)
	$(BIN)/ruff check defdistill tests benchmarks
	$(BIN)/ruff format --check defdistill tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy defdistill

format: $(STAMP)
	$(BIN)/ruff format defdistill tests
	$(BIN)/ruff check --fix defdistill tests

# `make bench` writes results/benchmarks.{json,md}; `make bench QUICK=1` is the under-a-minute run,
# written to build/bench/ so that it never replaces the committed full-run table.
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py $(if $(QUICK),--quick --results-dir build/bench,--readme README.md)

clean:
	rm -rf runs data .pytest_cache
