"""End to end through `run.py` on the tiny pair: result files, resumable sweeps, clear errors."""

from __future__ import annotations

import json
import os
import resource
import stat
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from spec_decode.models import byte_tokenizer
from spec_decode.results import RESULT_FILE, load_results
from tests.conftest import FAST, run_cli


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return [line for line in proc.stderr.splitlines() if line.startswith("error: ")]


def last_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """stdout's last line before the busy-machine warnings (which a busy machine adds at the very end)."""
    lines = proc.stdout.strip().splitlines()
    while lines and lines[-1].startswith("WARNING: "):
        lines.pop()
    return lines


def test_comparison_run_writes_a_complete_result(tmp_path):
    proc = run_cli("experiment=compare", *FAST, f"results_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = tmp_path / RESULT_FILE
    assert f"results written to {result}" in last_lines(proc)[-1]
    df = load_results(tmp_path)
    assert list(df["method"]) == ["ar", "hf_greedy", "hf_assisted", "linear", "tree"]
    for column in ["throughput.mean", "throughput.std", "throughput.p50", "speedup", "acceptance_rate",
                   "acceptance_node_level", "acceptance_depth_level", "tokens_per_round", "mean_tree_nodes",
                   "target_forwards_per_token", "draft_forwards_per_token", "ttft_s.mean", "tpot_s.mean",
                   "exact_match.mean", "memory.peak_rss_mb", "param.depth", "param.k", "device_name", "dtype"]:
        assert column in df.columns, column
    for speedup in ("speedup", "speedup_of_totals", "speedup_mean_of_ratios"):
        assert df.set_index("method").loc["ar", speedup] == pytest.approx(1.0)
        assert (df[speedup] > 0).all()
    assert (df.set_index("method").loc[["hf_greedy", "hf_assisted", "linear", "tree"], "exact_match.mean"] == 1.0).all()


def test_sampled_run_records_its_knobs_and_marks_exact_match_not_applicable(tmp_path):
    proc = run_cli("experiment=compare", *FAST, "temperature=0.8", "top_k=20", f"results_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    stored = json.loads((tmp_path / RESULT_FILE).read_text())
    runs = stored["methods"]
    assert {r["method"]: r["sampling"] for r in runs.values()} == dict.fromkeys(
        ["ar", "hf_greedy", "hf_assisted", "linear", "tree"], {"temperature": 0.8, "top_p": 1.0, "top_k": 20})
    assert all(s["exact_match"] is None and not s["exact_match_applicable"] for s in stored["summary"])
    assert "n/a" in proc.stdout
    ar = [s["tokens"] for s in runs["ar"]["samples"]]
    assert [s["tokens"] for s in runs["tree"]["samples"]] == ar  # one seed per prompt: the tree draws AR's sample
    assert all(s["exact_match"] is None for r in runs.values() for s in r["samples"])


def test_interleaved_order_measures_every_method_on_every_prompt(tmp_path):
    proc = run_cli("experiment=compare", *FAST, "num_prompts=3", "repeats=2", f"results_dir={tmp_path}")  # default
    assert proc.returncode == 0, proc.stderr[-2000:]
    df = load_results(tmp_path).set_index("method")
    assert (df["samples"] == 6).all()
    assert (df.loc[["hf_greedy", "hf_assisted", "linear", "tree"], "exact_match.mean"] == 1.0).all()
    assert df["interleave"].all()
    stored = json.loads((tmp_path / RESULT_FILE).read_text())
    host = stored["environment"]["machine"]
    assert host["threads"] == 1 and host["chosen_by"] == "threads= in the config" and "other_cpu_cores" in host["start"]
    assert all("other_cpu_cores" in s for run in stored["methods"].values() for s in run["samples"])
    assert all(s["other_cpu"]["mean_cores"] >= 0 for s in stored["summary"])


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


BAD_INPUT = [
    (["method=nope"], "method"), (["methods=[ar,nope]"], "nope"), (["depth=0"], "depth"), (["branch=0"], "branch"),
    (["threshold=1.5"], "threshold"), (["method=linear", "k=0"], "k"), (["max_new_tokens=0"], "max_new_tokens"),
    (["method=linear", "method.confidence=1.5"], "confidence"), (["method=tree", "method.lookup_first=maybe"],
                                                                  "lookup_first"),
    (["method=linear", "method.fallback=maybe"], "fallback"),
    (["method=tree", "method.budget_split=maybe"], "budget_split"), (["method=tree", "method.recycle=-1"], "recycle"),
    (["model=tiny", "model.arch=gpt9"], "gpt9"), (["dataset=wikitext2", "dataset.path=/no/such"], "dataset.path"),
    # knobs the chosen method does not use are still checked, types included
    (["method=tree", "k=0"], "k"), (["method=tree", "k=-1"], "k"), (["method=tree", "k="], "k"),
    (["threads=0"], "threads"), (["threads=-1"], "threads"), (["seed=abc"], "seed"),
    (["max_new_tokens=abc"], "max_new_tokens"),
    (["dataset.min_tokens=0", "dataset.max_tokens=0"], "dataset.min_tokens"),
    (["methods=[ar,{name:linear,k:abc}]"], "k must be"), (["profile=maybe"], "profile"),
    (["overwrite=1"], "overwrite"), (["trace_rounds=-2"], "trace_rounds"),
    (["temperature=-0.5"], "temperature"), (["temperature=hot"], "temperature"),
    (["temperature=1", "top_p=0"], "top_p"), (["temperature=1", "top_p=1.5"], "top_p"),
    (["temperature=1", "top_k=-1"], "top_k"), (["top_k=5"], "temperature > 0"),
    (["batch_size=0"], "batch_size"), (["batch_size=abc"], "batch_size"),
    (["batch_size=3"], "batch_size 3 is larger than the 2 prompts"),
    (["method=hf_assisted", "batch_size=2"], "'hf_assisted' does not run at batch_size > 1; batched methods: ar, "
                                             "linear, tree"),
    (["methods=[ar,{name:tree,recycle:4}]", "batch_size=2"], "recycle=4 runs at batch_size=1 only"),
    (["batch_size=2", "temperature=0.7"], "greedily only"), (["batch_size=2", "static_cache=true"], "static_cache"),
]


@pytest.mark.parametrize(("bad", "named"), BAD_INPUT)
def test_bad_input_gets_one_clear_line(tmp_path, bad, named):
    proc = run_cli(*FAST, *bad, f"results_dir={tmp_path}")
    assert proc.returncode == 2
    errors = error_lines(proc)
    assert len(errors) == 1, proc.stderr[-2000:]
    assert named in errors[0]
    assert not list(tmp_path.glob("**/*.json"))


def test_resume_reuses_only_the_same_config_and_overwrite_reruns(tmp_path):
    (tmp_path / ".tmp-x1y2z3.json").write_text('{"complete": tr')  # left by a write that was killed
    first = run_cli(*FAST, "method=tree", "depth=2", f"results_dir={tmp_path}", preexec_fn=lambda: os.umask(0o022))
    assert first.returncode == 0, first.stderr[-2000:]
    result = tmp_path / RESULT_FILE
    assert [p.name for p in tmp_path.iterdir()] == [RESULT_FILE]
    assert stat.S_IMODE(result.stat().st_mode) == 0o644
    stored = json.loads(result.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in strict JSON"))
    assert datetime.fromisoformat(stored["started_at"]).tzinfo is not None
    assert "dataset builtin: 2 prompts x 1 repeats, up to 12 new tokens" in first.stdout
    stamp = result.stat().st_mtime_ns

    again = run_cli(*FAST, "method=tree", "depth=2", f"results_dir={tmp_path}")
    assert again.returncode == 0 and result.stat().st_mtime_ns == stamp
    assert "reused" in again.stdout and "speedup" in again.stdout and "tree" in again.stdout  # the summary table

    changed = run_cli(*FAST, "method=linear", "k=2", f"results_dir={tmp_path}")
    assert changed.returncode == 2 and result.stat().st_mtime_ns == stamp
    [error] = error_lines(changed)
    assert 'method.name: "tree" → "linear"' in error and "overwrite=true" in error

    forced = run_cli(*FAST, "method=linear", "k=2", "overwrite=true", f"results_dir={tmp_path}")
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert list(load_results(tmp_path)["method"]) == ["ar", "linear"]


def test_results_folder_is_checked_before_any_measurement(tmp_path):
    labels = ",".join(f"{{name:linear,label:linear_with_a_long_label_{i}}}" for i in range(8))
    proc = run_cli(*FAST, f"methods=[ar,{labels}]", f"hydra.run.dir={tmp_path}/hydra")  # default results_dir
    assert proc.returncode == 2
    [error] = error_lines(proc)
    assert "bytes long" in error and "measuring" not in proc.stdout
    proc = run_cli(*FAST, "results_dir=/proc/forbidden", f"hydra.run.dir={tmp_path}/hydra")
    assert proc.returncode == 2 and "cannot write to results folder /proc/forbidden" in error_lines(proc)[0]


def test_a_write_that_fails_after_measurement_loses_nothing(tmp_path):
    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # as `ulimit -f 4`: the probe fits, the result not

    proc = run_cli(*FAST, f"results_dir={tmp_path}/out", f"hydra.run.dir={tmp_path}/hydra", "hydra.output_subdir=null",
                   "hydra/job_logging=stdout", preexec_fn=small_files)
    assert proc.returncode == 1
    [error] = error_lines(proc)
    assert f"cannot write {tmp_path}/out/{RESULT_FILE}" in error
    if "saved to " in error:
        kept = Path(error.split("saved to ")[1])
        saved = json.loads(kept.read_text())
        kept.unlink()
    else:  # the fallback file was too large for the limit as well: the result is on stdout
        assert "printed on stdout" in error
        saved = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith('{"schema_version"')))
    assert saved["complete"] is True and [s["method"] for s in saved["summary"]] == ["ar", "tree"]
    assert not list((tmp_path / "out").iterdir())


def test_a_missing_dataset_fails_before_the_default_pair_loads(tmp_path):
    start = time.monotonic()
    baseline = run_cli("threads=0", f"results_dir={tmp_path}/a", f"hydra.run.dir={tmp_path}/hydra")
    startup = time.monotonic() - start  # interpreter, imports and Hydra: the same in both runs
    assert baseline.returncode == 2
    start = time.monotonic()
    cache = tmp_path / "cache"  # empty: loading the pair would first spend a minute building its model cache
    proc = run_cli("dataset.path=/no/such", f"results_dir={tmp_path}/b", f"hydra.run.dir={tmp_path}/hydra",
                   env=os.environ | {"SPEC_DECODE_CACHE": str(cache)})
    assert proc.returncode == 2 and "dataset file /no/such/test.txt not found" in error_lines(proc)[0]
    assert time.monotonic() - start < startup + 5
    assert not cache.exists()


def test_a_repository_needing_custom_code_is_refused_without_a_prompt(tmp_path):
    repo = tmp_path / "custom"
    repo.mkdir()
    byte_tokenizer().save_pretrained(repo)
    (repo / "custom.py").write_text("raise SystemExit('custom code ran')\n")
    (repo / "config.json").write_text(json.dumps({"model_type": "custom_thing", "auto_map": {
        "AutoConfig": "custom.CustomConfig", "AutoModelForCausalLM": "custom.CustomModel"}}))
    proc = run_cli(*FAST, "model=pythia", f"model.target={repo}", f"model.draft={repo}", f"model.tokenizer={repo}",
                   "model.device=cpu", "model.dtype=float32", f"results_dir={tmp_path}/out",
                   f"hydra.run.dir={tmp_path}/hydra")
    assert proc.returncode == 2
    [error] = error_lines(proc)
    assert "needs Python code from the model repository" in error and "model.trust_remote_code=true" in error
    assert "custom code ran" not in proc.stderr + proc.stdout
