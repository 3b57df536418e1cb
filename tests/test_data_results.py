"""Prompt sets and result files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spec_decode.data import BUILTIN_PROMPTS, DatasetError, cut_prompts, is_heading, load_prompts
from spec_decode.models import byte_tokenizer
from spec_decode.results import is_complete, write_atomic

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
