# The two commands a new user needs: `make demo` and `make test`.  Both set up first.
PY := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test lint typecheck imports pytest soak bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	@$(PY) -m ctgtp demo

test: setup lint typecheck imports pytest

lint:
	@echo "== ruff"
	@.venv/bin/ruff check .

typecheck:
	@echo "== mypy --strict"
	@.venv/bin/mypy

imports:
	@echo "== import-linter"
	@.venv/bin/lint-imports --no-cache

pytest:
	@echo "== pytest"
	@$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

soak: setup
	@$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

bench: setup
	@$(PY) bench/run_all.py

clean:
	rm -rf .venv demo-output bench-results.json .mypy_cache .ruff_cache
