# Two entry points of the README's quick start: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test lint bench clean

$(BIN)/feedrank: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,api,neural]'
	touch $(BIN)/feedrank

setup: $(BIN)/feedrank

demo: setup
	$(BIN)/feedrank --store sqlite:///./demo.db demo

lint: setup
	$(BIN)/ruff check src tests $(wildcard bench) $(wildcard examples)
	$(BIN)/ruff format --check src tests $(wildcard bench) $(wildcard examples)
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -n 2

bench: setup
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) demo.db demo.db-* feedrank_models .pytest_cache .mypy_cache .ruff_cache
