# Every target bootstraps what it needs: a .venv with Loom installed (re-done only when
# pyproject.toml changes). Nothing depends on what a previous session installed by hand.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.loom-installed
LAB_PORT ?= 8888
PYTEST_ARGS ?=

.PHONY: lab demo test lint bench proto venv sysdeps clean

# System packages the tests need (Debian): a real browser for the widget test. Installed only
# when missing; `apt-get update` first, as a fresh machine's package lists may be empty.
SYSDEPS_BIN := chromium npm
SYSDEPS_PKG := chromium fonts-dejavu-core nodejs npm
# Real MCP servers from npm for the tests (Python ones come with the dev extra).
PEERS := $(VENV)/mcp-peers
PEERS_STAMP := $(PEERS)/.installed

$(PY):
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python >= 3.11 required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q -e '.[lab,dev]'
	touch $(STAMP)

venv: $(STAMP)

sysdeps:
	@missing=""; for b in $(SYSDEPS_BIN); do command -v $$b >/dev/null || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages ($(SYSDEPS_PKG)) for:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $(SYSDEPS_PKG); \
	fi

$(PEERS_STAMP): tests/peers/package.json | $(PY) sysdeps
	mkdir -p $(PEERS) && cp tests/peers/package.json $(PEERS)/package.json
	cd $(PEERS) && npm install --no-audit --no-fund --loglevel=error
	touch $@

lab: $(STAMP)
	@echo "JupyterLab on notebooks/ at http://127.0.0.1:$(LAB_PORT)/lab (the token is in the URL printed below)"
	$(VENV)/bin/jupyter lab --no-browser --ip=127.0.0.1 --port=$(LAB_PORT) --ServerApp.root_dir=notebooks \
		$$( [ "$$(id -u)" = 0 ] && echo --allow-root )

demo: $(STAMP)
	$(PY) examples/trio.py
	$(VENV)/bin/loom demo

test: $(STAMP) sysdeps $(PEERS_STAMP)
	$(VENV)/bin/ruff check loom tests bench examples
	$(VENV)/bin/ruff format --check loom tests bench examples
	$(PY) -m pytest --nbmake tests notebooks $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check --fix loom tests bench examples
	$(VENV)/bin/ruff format loom tests bench examples

bench: $(STAMP)
	$(PY) bench/bus.py
	$(PY) bench/rpc.py
	$(PY) bench/notebook.py
	$(PY) bench/tools.py
	$(PY) bench/bridge.py

proto: $(STAMP)
	$(PY) -m loom.bridge.protogen

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache
