# spec_decode: set up, run, test. Every target here works on a CPU-only machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_ARGS ?=

.PHONY: setup run test lint

$(PY):
	$(PYTHON) -m venv $(VENV)

# CPU machines: torch==2.13.0 first (a CPU build); a bare `torch` requirement would pull a multi-GB CUDA build.
# On a GPU machine install the CUDA torch you need first, then `pip install -e ".[dev]"`.
setup: $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"

# A comparison of every method on the default pair over WikiText-2 test prompts (the local copy by default).
run:
	$(PY) run.py experiment=compare $(RUN_ARGS)

test:
	$(PY) -m pytest

lint:
	$(VENV)/bin/ruff check spec_decode tests run.py
