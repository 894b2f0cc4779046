# Everything CI does is `make test`; a second run reuses the venv and only lints and tests.

PYTHON ?= python3
VENV ?= .venv
# Installed first and pinned: a bare or open-ended `torch` pulls a multi-GB CUDA build.
TORCH ?= torch==2.13.0
# Serial by default: on 2 cores `-n 2` measured no faster (torch already uses both cores).
PYTEST_ARGS ?=

BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --no-input
STAMP := $(VENV)/.installed

.PHONY: install lint test quickstart clean distclean

install: $(STAMP)

$(STAMP): pyproject.toml requirements-assets.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install "$(TORCH)"
	$(PIP) install -e '.[dev]'
	$(PIP) install --no-deps -r requirements-assets.txt
	touch $@

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy src
	$(BIN)/lint-imports

test: install lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS) tests

quickstart: install
	$(BIN)/lmforge quickstart

clean:
	rm -rf build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
	find src tests -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
