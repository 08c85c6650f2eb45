# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-under-load lint pytest bench bench-quick chaos timeline-example setup system clean

# `make demo DEMO_ARGS=--keep` leaves its database running to look into.
demo: setup
	$(BIN)/bulk-sync demo $(DEMO_ARGS)

test: setup lint pytest

# The same, on a deliberately slow machine: a busy loop pinned to each core beside the suite.
test-under-load:
	scripts/under-load $(MAKE) test

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/sqlfluff lint sql pg_cron.sql

# Three workers, each with its own PostgreSQL cluster: most tests wait on Shopify-like latencies, so they overlap.
PYTEST_WORKERS ?= 3
pytest: setup
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist worksteal

bench: setup
	$(BIN)/python -m bench

bench-quick: setup
	$(BIN)/python -m bench --quick

chaos: setup
	$(BIN)/python -m bench.chaos --seed 1 --seed 2 --seed 3

# The README's example picture (docs/timeline.svg, the one generated file in git): the demo's backfill, drawn.
timeline-example: setup
	$(BIN)/bulk-sync demo --timeline docs/timeline.svg

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
