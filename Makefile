# Two entry points: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test fast schema clean-demo

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# requirements.lock pins every transitive package, torch 2.14.1 included (PyPI's CUDA build: 3.2 GB of
	# CUDA libraries even on a CPU-only machine), from whatever package index pip is configured with.
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/curate run pipelines/local.yaml
	$(BIN)/curate stats out/local

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

schema: $(STAMP)
	$(BIN)/curate schema

clean-demo:
	rm -rf out/local data/samples
