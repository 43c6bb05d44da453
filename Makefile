# The README's commands. Each installs what it needs first (a virtualenv in .venv).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install demo api test unit integration e2e lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --editable '.[dev]'
	touch $@

demo: install  ## the platform on embedded PostgreSQL, with simulated traffic
	$(BIN)/peakend demo

api: install  ## the API alone, for your own traffic
	$(BIN)/peakend api

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint  ## lint, type-check, then every test (unit, integration, end-to-end)
	$(BIN)/python -m pytest

unit: install
	$(BIN)/python -m pytest tests/unit

integration: install
	$(BIN)/python -m pytest tests/integration

e2e: install
	$(BIN)/python -m pytest tests/e2e

clean:
	rm -rf $(VENV) .peakend .pytest_cache .mypy_cache .ruff_cache .hypothesis
