# The two set-up commands are `make demo` and `make test`; both create .venv on first use.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-slow unit e2e lint demo bench golden mutants

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# After the tests: the line coverage of translator/ and the lines no test runs, by file; it
# fails under 95 %.
COVERAGE := --cov=meshpilot.translator --cov-report=term-missing:skip-covered --cov-fail-under=95

test: $(STAMP)
	$(BIN)/pytest -q -n 2 --dist loadgroup -m 'not slow' $(COVERAGE) tests e2e

# The replica suites on real etcd (several control planes, etcd clusters, a network partition)
# and certificate rotation under load; CI runs them after `make test`.
test-slow: $(STAMP)
	$(BIN)/pytest -q -n 2 --dist loadgroup -m slow tests e2e

unit: $(STAMP)
	$(BIN)/pytest -q tests

e2e: $(STAMP)
	$(BIN)/pytest -q -n 2 --dist loadgroup e2e

lint: $(STAMP)
	$(BIN)/ruff check src tests e2e bench examples
	$(BIN)/ruff format --check src tests e2e bench examples
	$(BIN)/mypy

# Critical lines broken on purpose (tests/mutants.py): each must turn some test red.
mutants: $(STAMP)
	$(BIN)/python tests/mutants.py

golden: $(STAMP)
	$(BIN)/pytest -q tests/test_golden.py --update-golden

demo: $(STAMP)
	$(BIN)/meshpilot up examples/demo/mesh.yaml

bench: $(STAMP)
	$(BIN)/python bench/translate.py
