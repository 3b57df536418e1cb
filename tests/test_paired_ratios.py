"""scripts/paired_ratios.py: per-prompt ratios over a baseline by group, an interval only where it means something."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("paired_ratios", ROOT / "scripts" / "paired_ratios.py")
paired = importlib.util.module_from_spec(spec)
sys.modules["paired_ratios"] = paired
spec.loader.exec_module(paired)


def sample(prompt: int, seconds: float, category: str) -> dict:
    return {"prompt": prompt, "repeat": 0, "new_tokens": 10, "seconds": seconds, "category": category}


@pytest.fixture
def result_file(tmp_path):
    """Six QA prompts where the method takes half AR's time, two writing prompts (MT-Bench) where it takes the same."""
    categories = ["qa"] * 6 + ["writing"] * 2
    ar = [sample(i, 1.0, c) for i, c in enumerate(categories)]
    fast = [sample(i, 0.5 if c == "qa" else 1.0, c) for i, c in enumerate(categories)]
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"methods": {"ar": {"samples": ar}, "fast": {"samples": fast}}}))
    return path


def test_ratios_by_group_with_intervals_from_five_pairs(result_file, capsys):
    paired.main([str(result_file)])
    lines = capsys.readouterr().out.splitlines()
    assert any("fast" in line and " qa " in line and "2.000  [2.000, 2.000]" in line and "6 of 6" in line
               for line in lines)
    assert any("mt_bench" in line and "1.000  (too few)" in line and "0 of 2" in line for line in lines)
    overall = next(line for line in lines if "overall" in line)
    assert "1.750" in overall and "6 of 8" in overall  # (6 * 2 + 2 * 1) / 8


def test_a_missing_baseline_is_one_error_line(result_file):
    with pytest.raises(SystemExit, match="has no method 'hf_greedy'; it has ar, fast"):
        paired.main([str(result_file), "--baseline", "hf_greedy"])
