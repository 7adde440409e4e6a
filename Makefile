# Two commands for a newcomer: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
export TIKTOKEN_CACHE_DIR ?= $(abspath ../shared/tiktoken_cache)

.PHONY: run test lint typecheck unit bench install clean lint-image lint-chart

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/tunegate serve --demo

lint: $(STAMP)
	$(BIN)/ruff check tunegate proxy registry config tests bench
	$(BIN)/ruff format --check tunegate proxy registry config tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck lint-image lint-chart
	$(BIN)/pytest -q

.PHONY: quick
quick: lint typecheck  # the loop while working: everything but the tests marked slow (processes, Chromium)
	$(BIN)/pytest -q -m "not slow"

lint-image: $(STAMP)  # the Dockerfile, with hadolint (a rule turned off says why, next to it)
	$(BIN)/hadolint --failure-threshold info Dockerfile

lint-chart: $(STAMP)  # helm lint --strict, both value files rendered and validated offline, the refusal cases
	PATH="$(abspath $(BIN)):$$PATH" helm/check.sh

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache tunegate.db build
