"""Hydra composition: every group member and experiment file composes and resolves its methods."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from spec_decode.config import check_config
from spec_decode.runner import CONF_DIR, ConfigError, method_specs, protocol_from


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def members(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["model", "method", "dataset", "experiment"])
def test_every_group_member_composes(group):
    for member in members(group):
        cfg = compose_cfg(f"{group}={member}")
        specs = method_specs(cfg, CONF_DIR)
        assert next(iter(specs)) == "ar"
        OmegaConf.to_container(cfg.model, resolve=True)
        OmegaConf.to_container(cfg.dataset, resolve=True)


def test_shortcuts_feed_the_method_group():
    cfg = compose_cfg("method=tree", "depth=8", "branch=3", "threshold=0.03", "max_nodes=128")
    assert method_specs(cfg, CONF_DIR)["tree"][1] == {"depth": 8, "branch": 3, "threshold": 0.03, "max_nodes": 128,
                                                      "budget": "fixed", "lookup": 0, "ngram": 3, "lookup_first": False,
                                                      "lookup_branches": 1, "recycle": 0, "budget_split": False,
                                                      "split_cost": True, "fallback": True}
    cfg = compose_cfg("method=tree", "method.depth=5")
    assert method_specs(cfg, CONF_DIR)["tree"][1]["depth"] == 5
    cfg = compose_cfg("method=linear", "k=6")
    assert method_specs(cfg, CONF_DIR)["linear"][1] == {"k": 6, "confidence": 0.0, "fallback": True}


def test_method_list_with_labels_and_shortcuts():
    cfg = compose_cfg("methods=[ar,linear,{name:linear,label:linear_k8,k:8},tree]", "k=3")
    specs = method_specs(cfg, CONF_DIR)
    assert list(specs) == ["ar", "linear", "linear_k8", "tree"]
    assert specs["linear"] == ("linear", {"k": 3, "confidence": 0.0, "fallback": True})
    assert specs["linear_k8"] == ("linear", {"k": 8, "confidence": 0.0, "fallback": True})


def test_experiment_compare_lists_all_methods():
    specs = method_specs(compose_cfg("experiment=compare"), CONF_DIR)
    assert list(specs) == ["ar", "hf_greedy", "hf_assisted", "linear", "tree"]


@pytest.mark.parametrize("overrides", [["methods=[nope]"], ["depth=0"], ["branch=0"], ["threshold=-0.1"],
                                       ["method=linear", "k=0"], ["methods=[linear,linear]"]])
def test_bad_method_knobs(overrides):
    with pytest.raises(ConfigError):
        method_specs(compose_cfg(*overrides), CONF_DIR)


@pytest.mark.parametrize("override", ["max_new_tokens=0", "num_prompts=0", "repeats=0", "warmup=-1"])
def test_bad_protocol(override):
    with pytest.raises(ConfigError):
        protocol_from(compose_cfg(override))


def test_experiment_files_are_global_packages():
    for file in Path(CONF_DIR / "experiment").glob("*.yaml"):
        assert file.read_text().startswith("# @package _global_"), file


BAD_KNOBS = [("k", ""), ("k", 0), ("k", -1), ("k", 1.5), ("depth", 0), ("branch", "x"), ("threshold", 1.5),
             ("threshold", "nan"), ("max_nodes", 0), ("cache_size", 0), ("max_new_tokens", "abc"), ("num_prompts", 0),
             ("repeats", 0), ("warmup", -1), ("seed", "abc"), ("threads", 0), ("threads", -1), ("profile", "maybe"),
             ("interleave", 1), ("overwrite", "yes"), ("trace_rounds", -1), ("dataset.min_tokens", 0),
             ("dataset.max_tokens", "x"), ("static_cache", "yes"), ("compile", 2), ("model.trust_remote_code", "no"),
             ("busy_threshold", -0.1), ("busy_threshold", "x"), ("strict_quiet", "yes")]


@pytest.mark.parametrize(("key", "value"), BAD_KNOBS)
def test_every_knob_is_checked_whether_or_not_the_method_uses_it(key, value):
    cfg = compose_cfg("method=ar")
    OmegaConf.set_struct(cfg, False)
    OmegaConf.update(cfg, key, float(value) if value == "nan" else value, force_add=True)
    with pytest.raises(ConfigError, match=rf"^{key} must be"):
        check_config(cfg)


def test_good_defaults_and_nullable_threads_pass():
    check_config(compose_cfg("threads=null"))
    check_config(compose_cfg("model=pythia", "threads=2", "threshold=0", "warmup=0"))


def test_min_tokens_above_max_tokens_is_refused():
    with pytest.raises(ConfigError, match="dataset.min_tokens"):
        check_config(compose_cfg("dataset.min_tokens=50", "dataset.max_tokens=40"))


def test_a_method_entry_knob_of_the_wrong_type_is_named():
    with pytest.raises(ConfigError, match="method 'linear': k must be an integer"):
        method_specs(compose_cfg("methods=[ar,{name:linear,k:abc}]"), CONF_DIR)
