#!/usr/bin/env bash
# The GPU check, offline, in a few minutes on one CUDA GPU; everything lands in results/gpu_check/<gpu name>/:
#   (a) the CUDA-marked tests (exactness fp32/fp16 on the tiny pairs, memory counters, sync budget, static cache),
#   (b) target/draft forward-cost curves (1..64 new tokens, 200-token context) of random models with Pythia-2.8B's
#       and Pythia-70M's shapes in float16 (conf/model/pythia_random.yaml: weights from a seed, no download),
#   (c) the harness overhead share (profile=true) of AR / Linear / Tree on that random pair,
#   (d) the same methods batched (batch 8): rows against batch-1 AR, speedup over batched AR, overhead share,
# plus gpu_check.log (all output) and environment.txt. GPU_CHECK_RESULTS=<folder> replaces results/gpu_check.
#
#   scripts/gpu_check.sh                 # a CUDA machine
#   scripts/gpu_check.sh --cpu --quick   # smoke run here: tiny sizes on the CPU (the CUDA tests skip)
# PYTHON=... picks the interpreter (default: .venv/bin/python if present, else python).
set -euo pipefail
cd "$(dirname "$0")/.."

cpu=0 quick=0
for arg in "$@"; do
  case "$arg" in
    --cpu) cpu=1 ;;
    --quick) quick=1 ;;
    *) echo "error: unknown option $arg (use --cpu and/or --quick)" >&2; exit 2 ;;
  esac
done
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TQDM_DISABLE=1

if [[ $cpu == 1 ]]; then
  gpu=cpu device=cpu dtype=float32 threads=2
else
  if ! gpu=$("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(0))' 2>/dev/null); then
    echo "error: no CUDA device visible to $PYTHON (for a CPU smoke run: --cpu --quick)" >&2
    exit 2
  fi
  device=cuda dtype=float16 threads=4
fi
out="${GPU_CHECK_RESULTS:-results/gpu_check}/$(echo "$gpu" | tr -cs 'A-Za-z0-9._-' '_' | sed 's/_$//')"
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1
echo "gpu_check: $gpu (device=$device dtype=$dtype quick=$quick) -> $out, $(date -u +%FT%TZ)"

{
  echo "git: $(git rev-parse HEAD 2>/dev/null || echo none) dirty=$(git status --porcelain 2>/dev/null | grep -c . || true)"
  "$PYTHON" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda,
"transformers", transformers.__version__); print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no cuda")'
  if command -v nvidia-smi >/dev/null; then nvidia-smi; fi
} > "$out/environment.txt" 2>&1
cat "$out/environment.txt"

model=(--set "model.device=$device" "model.dtype=$dtype")
run_model=("model.device=$device" "model.dtype=$dtype")
tokens=64 repeats=10 prompts=4 new=64 warmup=2
if [[ $quick == 1 ]]; then  # tiny shapes: the same code paths in seconds
  small=(model.target.hidden_size=64 model.target.num_hidden_layers=2 model.target.num_attention_heads=4
         model.target.intermediate_size=256 model.target.vocab_size=512 model.draft.hidden_size=32
         model.draft.num_hidden_layers=1 model.draft.num_attention_heads=2 model.draft.intermediate_size=128
         model.draft.vocab_size=512)
  model+=("${small[@]}") run_model+=("${small[@]}")
  tokens=8 repeats=3 prompts=2 new=16 warmup=1
fi

echo "== (a) CUDA-marked tests"
"$PYTHON" -m pytest -m cuda -q -rs -p no:cacheprovider tests --junitxml="$out/cuda_tests.xml"

echo "== (b) forward cost, 1..$tokens new tokens after a 200-token context"
"$PYTHON" scripts/forward_cost.py --model pythia_random --context 200 --max-tokens "$tokens" --repeats "$repeats" \
  --threads "$threads" --out "$out" "${model[@]}"

# threshold 0: a random draft's probabilities are near uniform, so any threshold would prune the whole tree
echo "== (c) harness overhead share, AR / Linear / Tree, profile=true"
"$PYTHON" run.py model=pythia_random dataset=builtin profile=true threads=$threads \
  "methods=[ar,{name:linear,label:linear_k4,k:4},{name:tree,label:tree_d4_b2,depth:4,branch:2,threshold:0.0,max_nodes:32}]" \
  num_prompts=$prompts max_new_tokens=$new repeats=1 warmup=$warmup "${run_model[@]}" \
  results_dir="$out/overhead" hydra.run.dir="$out/overhead/hydra"
"$PYTHON" - "$out" <<'EOF'
import sys
from pathlib import Path

from spec_decode.results import load_results

out = Path(sys.argv[1])
df = load_results(out / "overhead").set_index("method")
cols = [c for c in ["throughput.mean", "speedup", "tokens_per_round", "time_share.target_forward",
                    "time_share.draft_forward", "time_share.overhead"] if c in df.columns]
df[cols].to_csv(out / "overhead.csv")
print(df[cols].to_string(float_format=lambda x: f"{x:.3f}"))
EOF
# batch > 1 on the device: every batched row must equal batch-1 AR (rows=AR@1), and the speedup curve's point there
batch=8
if [[ $quick == 1 ]]; then batch=2; fi
echo "== (d) batched AR / Linear / Tree at batch $batch, profile=true"
"$PYTHON" run.py model=pythia_random dataset=builtin profile=true threads=$threads batch_size=$batch \
  "methods=[ar,{name:linear,label:linear_k4,k:4},{name:tree,label:tree_d4_b2,depth:4,branch:2,threshold:0.0,max_nodes:32}]" \
  num_prompts=$batch max_new_tokens=$new repeats=1 warmup=1 "${run_model[@]}" \
  results_dir="$out/batched" hydra.run.dir="$out/batched/hydra"
echo "gpu_check done: $out ($(date -u +%FT%TZ))"
