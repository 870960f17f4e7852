# The two commands: `make run` and `make test` each do their own set-up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: run test install lint typecheck check bench bench-full migrate clean browser-deps screenshots vendor js-deps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,browser,bench]'
	touch $(STAMP)

install: $(STAMP)

migrate: $(STAMP)
	$(BIN)/collab migrate

run: migrate
	$(BIN)/collab serve --dev --host $(HOST) --port $(PORT)

# Debian's Chromium (and Node for the JS unit tests, npm for the editors' pinned packages) for
# the browser tests, never a browser download; skipped with a note when not root.
browser-deps:
	@if command -v node >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get install -y -qq nodejs >/dev/null 2>&1 || \
		 (apt-get update -qq && apt-get install -y -qq nodejs >/dev/null)) || \
		echo "make: could not install nodejs; JS tests will skip"; \
	else echo "make: no node; JS tests will skip"; fi
	@if command -v npm >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get install -y -qq npm >/dev/null 2>&1 || \
		 (apt-get update -qq && apt-get install -y -qq npm >/dev/null)) || \
		echo "make: could not install npm; editor tests will skip"; \
	else echo "make: no npm; editor tests will skip"; fi
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get install -y -qq chromium >/dev/null 2>&1 || \
		 (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)) || \
		echo "make: could not install chromium; browser tests will skip"; \
	else echo "make: no /usr/bin/chromium; browser tests will skip"; fi

test: $(STAMP) browser-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check collab tests benchmarks
	$(BIN)/ruff format --check collab

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --vs-sharedb

bench-full: $(STAMP)
	$(BIN)/python benchmarks/run.py --full --vs-sharedb

# The editors' ES modules under collab/static/vendor/, built from the npm packages pinned in
# tests/browser/js/package-lock.json. The output is committed: `make run` and `make test` never
# need npm for the server.
vendor: js-deps
	cd tests/browser/js && node build_vendor.mjs

js-deps:
	cd tests/browser/js && npm ci --no-fund --no-audit

screenshots: $(STAMP) browser-deps
	COLLAB_SCREENSHOTS=1 $(BIN)/python -m pytest tests/browser/test_screenshots.py -q

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis collab.db*
