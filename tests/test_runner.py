"""The runner in-process: what happens before the models load, a failed write, the model-cache build message."""

from __future__ import annotations

import errno
import json
import tempfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from transformers import AutoModelForCausalLM, AutoTokenizer

from spec_decode import decoders, offline, results, runner
from spec_decode.data import DatasetError
from spec_decode.models import byte_tokenizer, tiny_pair
from spec_decode.runner import CONF_DIR, ResultWriteError, run, save


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.fixture
def models_must_not_load(monkeypatch):
    """Fail the test if the pair is loaded; record tokenizer loads."""
    calls = []

    def no_pair(cfg):
        pytest.fail("the models were loaded before the prompts were checked")

    def tokenizer(cfg):
        calls.append(cfg["name"])
        return byte_tokenizer()

    monkeypatch.setattr(runner, "load_pair", no_pair)
    monkeypatch.setattr(runner, "load_tokenizer", tokenizer)
    return calls


def test_a_missing_dataset_fails_before_the_tokenizer_and_models(tmp_path, models_must_not_load):
    with pytest.raises(DatasetError, match="/no/such"):
        run(compose_cfg("dataset.path=/no/such", f"results_dir={tmp_path}"))
    assert models_must_not_load == []


def test_prompts_are_cut_with_the_tokenizer_before_the_models_load(tmp_path, models_must_not_load):
    with pytest.raises(DatasetError, match="only"):
        run(compose_cfg("dataset=builtin", "num_prompts=99", f"results_dir={tmp_path}"))
    assert models_must_not_load == ["smollm2-135m_distilled"]


def test_an_unknown_category_fails_before_the_tokenizer_loads(tmp_path, models_must_not_load):
    path = tmp_path / "q.jsonl"
    path.write_text('{"turns": ["a"], "category": "qa"}\n')
    with pytest.raises(DatasetError, match="nope"):
        run(compose_cfg("dataset=jsonl", f"dataset.path={path}", "dataset.turns_field=turns",
                               "dataset.category_field=category", "dataset.categories=[nope]",
                               f"results_dir={tmp_path}/out"))
    assert models_must_not_load == []


def test_a_failed_write_saves_the_result_elsewhere_and_says_where(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "fallback"))
    (tmp_path / "fallback").mkdir()

    def disk_full(path, payload):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results, "write_atomic", disk_full)
    with pytest.raises(ResultWriteError, match="No space left on device") as caught:
        save(tmp_path / "out" / "result.json", {"complete": True, "speedup": float("nan")})
    kept = Path(str(caught.value).split("saved to ")[1])
    assert kept.parent == tmp_path / "fallback" and json.loads(kept.read_text()) == {"complete": True, "speedup": None}


def test_the_result_records_the_code_the_run_started_with(tmp_path, monkeypatch):
    states = iter([{"commit": "at start", "dirty": False}])
    monkeypatch.setattr(results, "git_state", lambda: next(states, {"commit": "committed during the run"}))
    out = run(compose_cfg("model=tiny", "dataset=builtin", "threads=1", "num_prompts=1", "repeats=1", "warmup=0",
                          "max_new_tokens=4", "method=ar", f"results_dir={tmp_path}"))
    assert results.read(out)["environment"]["git"] == {"commit": "at start", "dirty": False}


def test_the_model_cache_build_says_what_it_is_doing(tmp_path, monkeypatch, capsys):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "model.gguf").write_bytes(b"")
    monkeypatch.setattr(offline, "gguf_folder", lambda package: tmp_path / "pkg")
    real_model, real_tokenizer = AutoModelForCausalLM.from_pretrained, AutoTokenizer.from_pretrained

    def model(path, gguf_file=None, **kwargs):  # the GGUF file stands for a tiny model
        return tiny_pair().target if gguf_file else real_model(path, **kwargs)

    def tokenizer(path, gguf_file=None, **kwargs):
        return byte_tokenizer() if gguf_file else real_tokenizer(path, **kwargs)

    monkeypatch.setattr(offline.AutoModelForCausalLM, "from_pretrained", model)
    monkeypatch.setattr(offline.AutoTokenizer, "from_pretrained", tokenizer)
    offline.load_gguf_target("pkg", "model.gguf", cache_dir=tmp_path / "cache")
    lines = [line for line in capsys.readouterr().err.splitlines() if "model cache" in line]
    assert len(lines) == 2 and lines[0].startswith("building the model cache") and "model.gguf" in lines[0]
    assert lines[1].startswith("model cache built in") and str(tmp_path / "cache") in lines[1]
    offline.load_gguf_target("pkg", "model.gguf", cache_dir=tmp_path / "cache")
    assert "model cache" not in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(decoders, "NonFiniteLogitsError"), reason="the NaN guard arrives with the decoders")
def test_non_finite_logits_end_with_one_clear_line():
    assert decoders.NonFiniteLogitsError in runner.USER_ERRORS
