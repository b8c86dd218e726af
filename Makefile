# Two commands do all set-up on a fresh machine:
#   make quickstart   create .venv if missing, install, run the quickstart
#   make test         create .venv if missing, install with the dev extra, run all tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: quickstart test lint bench paper clean

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

# The paper's grid on ML-1M (needs the data: $TFPRIVADV_DATA_DIR or --data-path);
# writes benchmarks/paper/README.md and its tables and plots. Resumes if interrupted.
paper: $(VENV)/.installed
	$(BIN)/tfprivadv sweep --dataset 1m --output benchmarks/paper

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
