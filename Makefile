# Set-up and everyday commands. `make demo` and `make test` work on a fresh clone:
# they create .venv, install the project with its dev extras, then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/defdistill demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check defdistill tests
	$(BIN)/ruff format --check defdistill tests

format: $(STAMP)
	$(BIN)/ruff format defdistill tests
	$(BIN)/ruff check --fix defdistill tests

clean:
	rm -rf runs data .pytest_cache
