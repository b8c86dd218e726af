# Two commands do all set-up on a fresh machine:
#   make quickstart   create .venv if missing, install, run the quickstart
#   make test         create .venv if missing, install with the dev extra, run all tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: quickstart test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@ $(VENV)/.installed

quickstart: $(VENV)/.installed
	$(BIN)/tfprivadv quickstart

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q --durations=10

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check tfprivadv tests examples benchmarks
	$(BIN)/ruff format --check tfprivadv tests examples benchmarks

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
