# The two commands a new user needs: `make demo` and `make test`.  Both set up first.
PY := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test lint typecheck imports pytest coverage soak bench clean

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

# Two workers (pytest-xdist, one per core): most tests wait on servers, subprocesses and the
# browser, so two at a time take about 0.6 of the serial time.  PYTEST_WORKERS=0 runs serially.
PYTEST_WORKERS ?= 2
pytest:
	@echo "== pytest"
	@$(PY) -m pytest -q -m "not slow" -n $(PYTEST_WORKERS) --dist worksteal --durations=15 $(PYTEST_ARGS)

# The same suite under coverage, then per-package floors (ebr_core 90 %, server and edge 85 %).
# Not part of `make test`: tracing makes the suite about 40 % slower than its 20-minute budget.
coverage: setup
	@rm -f .coverage
	@$(PY) -m pytest -q -m "not slow" --cov --cov-report= $(PYTEST_ARGS)
	@$(PY) scripts/coverage_gate.py

soak: setup
	@$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

bench: setup
	@$(PY) bench/run_all.py

clean:
	rm -rf .venv demo-output bench-results.json .mypy_cache .ruff_cache .coverage
