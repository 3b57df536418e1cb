"""Prompt sets and result files."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spec_decode.data import BUILTIN_PROMPTS, DatasetError, cut_prompts, is_heading, load_prompts
from spec_decode.metrics import bootstrap_interval, paired_ratios, speedups
from spec_decode.models import byte_tokenizer
from spec_decode.report.common import newest_file
from spec_decode.results import (
    ResultsDirError,
    config_changes,
    is_complete,
    load_results,
    prepare_dir,
    save_fallback,
    write_atomic,
)

WIKITEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2"


def test_builtin_prompts_need_no_data():
    prompts = load_prompts({"source": "builtin", "min_tokens": 1, "max_tokens": 100}, byte_tokenizer(), 3)
    assert [p.text for p in prompts] == list(BUILTIN_PROMPTS[:3])


def test_cut_skips_headings_and_short_lines_and_truncates():
    lines = ["", " = Title = ", " = = Section = = ", " short ", " " + "word " * 40]
    prompts = cut_prompts(lines, byte_tokenizer(), min_tokens=10, max_tokens=50, count=5)
    assert len(prompts) == 1 and len(prompts[0].ids) == 50
    assert is_heading("= = Section = =") and not is_heading("A = B")


def test_missing_local_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="dataset.path"):
        load_prompts({"source": "local", "path": str(tmp_path), "split": "test"}, byte_tokenizer(), 1)


def test_too_few_prompts_is_a_clear_error():
    with pytest.raises(DatasetError, match="only"):
        load_prompts({"source": "builtin", "min_tokens": 1, "max_tokens": 100}, byte_tokenizer(), 99)


@pytest.mark.skipif(not WIKITEXT.is_dir(), reason="../shared/data/wikitext-2 not present")
def test_local_wikitext_prompts_are_deterministic_article_text():
    cfg = {"source": "local", "path": str(WIKITEXT), "split": "test", "min_tokens": 20, "max_tokens": 100}
    first, again = (load_prompts(cfg, byte_tokenizer(), 8) for _ in range(2))
    assert [p.ids for p in first] == [p.ids for p in again]
    assert all(20 <= len(p.ids) <= 100 and not p.text.startswith("=") for p in first)


def test_write_atomic_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "result.json"
    with pytest.raises(TypeError):
        write_atomic(target, {"complete": True, "bad": object()})
    assert list(tmp_path.iterdir()) == []
    write_atomic(target, {"complete": True})
    assert is_complete(target) and json.loads(target.read_text()) == {"complete": True}
    target.write_text('{"complete": tr')
    assert not is_complete(target)


def test_result_files_honour_the_umask_and_are_strict_json(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "result.json", {"complete": True, "speedup": float("nan"), "x": [float("inf"), 1.0]})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "result.json").stat().st_mode) == 0o644
    text = (tmp_path / "result.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}")) == {
        "complete": True, "speedup": None, "x": [None, 1.0]}


def test_nulls_read_back_as_nan(tmp_path):
    run = {"complete": True, "config": {"model": {"name": "m"}, "dataset": {"name": "d"}, "max_new_tokens": 4},
           "environment": {"device_name": "cpu", "dtype": "float32"},
           "methods": {"ar": {"method": "ar", "params": {}}}, "summary": [{"method": "ar", "speedup": float("nan")}]}
    write_atomic(tmp_path / "result.json", run)
    df = load_results(tmp_path)
    assert df["speedup"].dtype == float and df["speedup"].isna().all()


def test_prepare_dir_refuses_long_names_and_unwritable_folders(tmp_path):
    with pytest.raises(ResultsDirError, match="bytes long"):
        prepare_dir(tmp_path / ("x" * 256))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ResultsDirError, match="cannot write"):
        prepare_dir(Path("/proc/forbidden"))
    prepare_dir(tmp_path / "a" / "b")
    assert list((tmp_path / "a" / "b").iterdir()) == []


def test_prepare_dir_removes_temp_files_of_killed_writes_only(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    alive = subprocess.Popen(["sleep", "30"])
    try:
        for name in [f".tmp-{dead.pid}-ab12.json", ".tmp-x7k2q9.json", f".tmp-{alive.pid}-cd34.json", "keep.json"]:
            (tmp_path / name).write_text("{")
        prepare_dir(tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == [f".tmp-{alive.pid}-cd34.json", "keep.json"]
    finally:
        alive.kill()


def test_fallback_keeps_the_result(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    path = save_fallback({"complete": True, "v": float("nan")})
    assert path.parent == tmp_path and json.loads(path.read_text()) == {"complete": True, "v": None}


def test_knobs_added_since_a_result_was_written_count_as_their_defaults():
    stored = {"method": {"name": "tree"}, "k": 4}
    assert config_changes(stored, stored | {"batch_size": 1, "temperature": 0.0, "top_p": 1.0, "top_k": 0}) == []
    assert config_changes(stored, stored | {"batch_size": 4}) == ["batch_size: 1 → 4"]
    assert config_changes(stored, {"method": {"name": "tree", "split_cost": True}, "k": 4}) == []
    assert config_changes(stored, {"method": {"name": "tree", "split_cost": False}, "k": 4}) == [
        "method.split_cost: true → false"]
    model = {"model": {"name": "smollm2"}, "k": 4}
    assert config_changes(model, {"model": {"name": "smollm2", "weight_left_gemm": False}, "k": 4}) == []
    assert config_changes(model, {"model": {"name": "smollm2", "weight_left_gemm": True}, "k": 4}) == [
        "model.weight_left_gemm: false → true"]


def test_config_changes_ignore_output_paths():
    old = {"results_dir": "a", "overwrite": False, "k": 4, "method": {"name": "tree", "depth": 2}}
    new = {"results_dir": "b", "overwrite": True, "k": 4, "method": {"name": "linear", "k": 4}, "compile": False}
    assert config_changes(old, old | {"results_dir": "b", "overwrite": True}) == []
    assert config_changes(old, new) == ['method.name: "tree" → "linear"', 'compile: (absent) → false',
                                        'method.depth: 2 → (absent)', 'method.k: (absent) → 4']


def test_speedup_three_ways_pairs_samples_by_prompt_and_repeat():
    def sample(prompt, repeat, tokens, seconds):
        return {"prompt": prompt, "repeat": repeat, "new_tokens": tokens, "seconds": seconds}

    ar = [sample(0, 0, 10, 1.0), sample(1, 0, 10, 4.0)]  # 10 and 2.5 tok/s
    method = [sample(1, 0, 10, 2.0), sample(0, 0, 10, 0.5)]  # 5 and 20 tok/s
    out = speedups(method, ar)
    assert out["speedup"] == pytest.approx(12.5 / 6.25)  # Spec-Bench: mean tok/s over AR's mean tok/s
    assert out["speedup_of_totals"] == pytest.approx((20 / 2.5) / (20 / 5.0))
    assert out["speedup_mean_of_ratios"] == pytest.approx((2.0 + 2.0) / 2)
    assert sorted(paired_ratios(method, ar)) == pytest.approx([2.0, 2.0])


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_samples():
    rng = np.random.default_rng(1)
    few, many = rng.normal(1.0, 0.1, 20), rng.normal(1.0, 0.1, 2000)
    (low, high), (low_many, high_many) = bootstrap_interval(few), bootstrap_interval(many)
    assert low < few.mean() < high and low_many < many.mean() < high_many
    assert high_many - low_many < (high - low) / 5  # the width falls as 1/sqrt(n): 10x fewer at 100x the samples
    assert bootstrap_interval([1.5] * 8) == (1.5, 1.5)


def test_newest_result_is_chosen_by_started_at_not_mtime(tmp_path):
    rows = pd.DataFrame({"file": ["old", "new", "legacy"],
                         "started_at": ["2026-01-02T00:00:00+00:00", "2026-03-01T00:00:00+00:00", None]})
    assert newest_file(rows) == "new"
