"""End to end through `run.py` on the tiny pair: result files, resumable sweeps, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from spec_decode.results import RESULT_FILE, load_results

ROOT = Path(__file__).resolve().parents[1]
FAST = ["model=tiny", "dataset=builtin", "threads=1", "num_prompts=2", "repeats=1", "warmup=1", "max_new_tokens=12"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_comparison_run_writes_a_complete_result(tmp_path):
    proc = run_cli("experiment=compare", *FAST, f"results_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = tmp_path / RESULT_FILE
    assert f"results written to {result}" in proc.stdout.strip().splitlines()[-1]
    df = load_results(tmp_path)
    assert list(df["method"]) == ["ar", "hf_greedy", "hf_assisted", "linear", "tree"]
    for column in ["throughput.mean", "throughput.std", "throughput.p50", "speedup", "acceptance_rate",
                   "acceptance_node_level", "acceptance_depth_level", "tokens_per_round", "mean_tree_nodes",
                   "target_forwards_per_token", "draft_forwards_per_token", "ttft_s.mean", "tpot_s.mean",
                   "exact_match.mean", "memory.peak_rss_mb", "param.depth", "param.k", "device_name", "dtype"]:
        assert column in df.columns, column
    assert df.set_index("method").loc["ar", "speedup"] == pytest.approx(1.0)
    assert (df.set_index("method").loc[["hf_greedy", "hf_assisted", "linear", "tree"], "exact_match.mean"] == 1.0).all()


def test_interleaved_order_measures_every_method_on_every_prompt(tmp_path):
    proc = run_cli("experiment=compare", *FAST, "num_prompts=3", "repeats=2", "interleave=true",
                   f"results_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    df = load_results(tmp_path).set_index("method")
    assert (df["samples"] == 6).all()
    assert (df.loc[["hf_greedy", "hf_assisted", "linear", "tree"], "exact_match.mean"] == 1.0).all()
    assert df["interleave"].all()


def test_multirun_is_resumable(tmp_path):
    sweep = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *FAST, "method=tree", "depth=2,3", "branch=2,3",
             f"results_dir={tmp_path}/" + "${hydra:job.override_dirname}", f"hydra.sweep.dir={tmp_path}/hydra"]
    assert run_cli(*sweep).returncode == 0
    files = sorted(tmp_path.glob(f"*/{RESULT_FILE}"))
    assert len(files) == 4
    stamps = {f: f.stat().st_mtime_ns for f in files}
    assert run_cli(*sweep).returncode == 0
    assert {f: f.stat().st_mtime_ns for f in files} == stamps
    files[0].unlink()
    assert run_cli(*sweep).returncode == 0
    assert files[0].exists()
    assert {f: f.stat().st_mtime_ns for f in files[1:]} == {f: stamps[f] for f in files[1:]}


@pytest.mark.parametrize("bad", [["method=nope"], ["methods=[ar,nope]"], ["depth=0"], ["branch=0"],
                                 ["threshold=1.5"], ["method=linear", "k=0"], ["max_new_tokens=0"],
                                 ["method=linear", "method.confidence=1.5"],
                                 ["method=tree", "method.lookup_first=maybe"],
                                 ["model=tiny", "model.arch=gpt9"], ["dataset=wikitext2", "dataset.path=/no/such"]])
def test_bad_input_gets_one_clear_line(tmp_path, bad):
    proc = run_cli(*FAST, *bad, f"results_dir={tmp_path}")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("**/*.json"))
