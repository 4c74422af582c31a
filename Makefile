# The README's two commands: `make demo` and `make test`. Both create (or reuse) .venv/.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench clean venv

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[sharepoint,dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/syncd demo

test: $(STAMP)
	$(BIN)/ruff check syncd connectors mappings state tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 2 -q

lint: $(STAMP)
	$(BIN)/ruff check syncd connectors mappings state tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/mirror_bench.py
	$(BIN)/python bench/daemon_bench.py
	$(BIN)/python bench/push_bench.py
	$(BIN)/python bench/api_bench.py
	$(BIN)/python bench/documents_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
