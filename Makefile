# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint pytest bench chaos setup system clean

demo: setup
	$(BIN)/bulk-sync demo

test: setup lint pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/sqlfluff lint sql pg_cron.sql

pytest: setup
	$(BIN)/pytest

bench: setup
	$(BIN)/python -m bench

chaos: setup
	$(BIN)/python -m bench.chaos --seed 1 --seed 2 --seed 3

setup: system $(VENV)/.installed

system:
	@scripts/install-postgres.sh

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) .bulk-sync .pytest_cache .ruff_cache .hypothesis
