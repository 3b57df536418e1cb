"""A method entry's own draft (`draft: <folder>`): two drafts of one target compared in one interleaved run."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from spec_decode import results
from spec_decode.config import ConfigError
from spec_decode.models import ModelLoadError, load_pair, tiny_pair
from spec_decode.runner import CONF_DIR, run


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.fixture(scope="module")
def saved_pair(tmp_path_factory):
    """The tiny pair written to folders, as a Hub pair on disk: target (+ tokenizer) and draft."""
    root = tmp_path_factory.mktemp("pair")
    pair = tiny_pair("llama")
    pair.target.save_pretrained(root / "target")
    pair.tokenizer.save_pretrained(root / "target")
    pair.draft.save_pretrained(root / "draft")
    return root


def hub_overrides(root) -> list[str]:
    return ["model=tiny", "model.source=hub", f"+model.target={root}/target", f"+model.draft={root}/draft",
            f"+model.tokenizer={root}/target", "dataset=builtin", "threads=1", "num_prompts=2", "repeats=1",
            "warmup=0", "max_new_tokens=12"]


def test_a_method_entry_runs_the_draft_it_names(saved_pair, tmp_path):
    """The target as its own draft: every drafted token is accepted, unlike the pair's draft, in the same run."""
    methods = (f"methods=[{{name:linear,label:pair_draft,k:3,fallback:false}},"
               f"{{name:linear,label:target_as_draft,k:3,fallback:false,draft:{saved_pair}/target}}]")
    out = run(compose_cfg(*hub_overrides(saved_pair), methods, f"results_dir={tmp_path}"))
    payload = results.read(out)
    own, named = payload["methods"]["pair_draft"], payload["methods"]["target_as_draft"]
    assert "draft" not in own and named["draft"] == f"{saved_pair}/target"
    assert payload["model"]["other_drafts"][f"{saved_pair}/target"]["parameters"] > 0
    for run_record in (own, named):
        assert all(s["tokens"] == ar["tokens"]
                   for s, ar in zip(run_record["samples"], payload["methods"]["ar"]["samples"], strict=True))
    named_samples = named["samples"]
    assert sum(s["accepted"] for s in named_samples) == sum(s["drafted"] for s in named_samples) > 0
    assert sum(s["accepted"] for s in own["samples"]) < sum(s["drafted"] for s in own["samples"])


@pytest.mark.parametrize("entry, message", [
    ("{name:retrieval,draft:/x}", "draft: is for the methods that run a plain draft model"),
    ("{name:eagle,draft:/x}", "not 'eagle'"),
    ("{name:linear,draft:3}", "draft must be a folder"),
])
def test_a_draft_where_none_runs_is_one_clear_error(entry, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        run(compose_cfg("model=tiny", f"methods=[{entry}]", f"results_dir={tmp_path}"))


def test_a_named_draft_needs_a_pair_from_files():
    with pytest.raises(ModelLoadError, match="needs a pair loaded from files"):
        load_pair({"source": "tiny"}, ["/some/draft"])


def test_a_missing_named_draft_says_which(saved_pair):
    cfg = {"source": "hub", "target": f"{saved_pair}/target", "draft": f"{saved_pair}/draft"}
    with pytest.raises(ModelLoadError, match="/no/such/draft"):
        load_pair(cfg, ["/no/such/draft"])
