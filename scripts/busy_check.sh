#!/usr/bin/env bash
# Issue 12's check: the same 3-method comparison on the default pair (interleaved, the default) run twice, once on
# a quiet machine and once with a CPU burner (`python -c 'while True: pass'`) started halfway through; then both
# summaries, the speedups side by side with their ratio (goal: within 15%) and whether the busy run was flagged.
# About 10 minutes on 2 cores (the quiet run ~1-2 min; the busy run's second half is slower). Run it on an
# otherwise idle machine. Exit status: 0 when both goals hold, 1 when not, 2 when a run failed.
#
#   scripts/busy_check.sh                                   # the default pair, small scale
#   scripts/busy_check.sh model=tiny dataset=builtin        # any extra run.py overrides (a smoke test)
#
# Environment: PY (default .venv/bin/python), OUT (default results/busy_check), BURN_AFTER (seconds into the busy
# run before the burner starts; default half the quiet run's wall time).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-results/busy_check}
ARGS=("methods=[ar,linear,tree]" model=smollm2 num_prompts=3 max_new_tokens=64 repeats=1 warmup=1 overwrite=true
      "$@")

run_pid=""
burner=""
stop() {  # the busy run and the burner, whatever happens
    if [[ -n $burner ]]; then kill "$burner" 2>/dev/null || true; wait "$burner" 2>/dev/null || true; fi
    if [[ -n $run_pid ]]; then kill "$run_pid" 2>/dev/null || true; fi
    burner=""
    run_pid=""
}
trap stop EXIT INT TERM

echo "== quiet run: ${ARGS[*]}"
start=$(date +%s)
"$PY" run.py "${ARGS[@]}" "results_dir=$OUT/quiet" || exit 2
quiet_s=$(($(date +%s) - start))
after=${BURN_AFTER:-$((quiet_s / 2))}

echo "== busy run: the same, with a CPU burner from ${after} s on (the quiet run took ${quiet_s} s)"
"$PY" run.py "${ARGS[@]}" "results_dir=$OUT/busy" &
run_pid=$!
for ((i = 0; i < after; i++)); do
    kill -0 "$run_pid" 2>/dev/null || break
    sleep 1
done
if kill -0 "$run_pid" 2>/dev/null; then
    "$PY" -c 'while True: pass' &
    burner=$!
    echo "== burner started (pid $burner)"
else
    echo "== the busy run ended before the burner was due (BURN_AFTER=${after})"
fi
status=0
wait "$run_pid" || status=$?
run_pid=""
stop
[[ $status -eq 0 ]] || exit 2

PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PY" scripts/busy_compare.py "$OUT/quiet" "$OUT/busy"
