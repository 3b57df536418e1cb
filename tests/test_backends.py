"""Pinned attention: every model loads on its config's backend; masked methods refuse one that cannot take a 4D mask."""

from __future__ import annotations

import pytest
import torch

from spec_decode.decoders import build_decoder
from spec_decode.models import ModelLoadError, check_attention, load_pair, tiny_pair
from tests.conftest import FAST, random_prompts, run_cli

MASKED = ["tree", "streaming_tree", "streaming_linear", "streaming_ar"]


@pytest.mark.parametrize("backend", ["flash_attention_2", "flash_attention_3", "flex_attention", "paged|eager",
                                     "kernels-community/flash-attn"])
@pytest.mark.parametrize("method", MASKED)
def test_masked_methods_refuse_backends_without_4d_masks(backend, method):
    with pytest.raises(ModelLoadError, match=f"attn_implementation={backend}.*{method}"):
        check_attention({"attn_implementation": backend}, ["ar", method])


@pytest.mark.parametrize("backend", ["eager", "sdpa", None])
def test_mask_taking_backends_pass(backend):
    check_attention({"attn_implementation": backend}, ["ar", *MASKED])


def test_unmasked_methods_accept_any_backend():
    check_attention({"attn_implementation": "flash_attention_2"}, ["ar", "linear", "hf_assisted", "hf_greedy"])


def test_models_load_on_the_pinned_backend():
    pair = load_pair({"source": "tiny"})
    assert pair.info["attn_implementation"] == "sdpa"
    assert pair.target.config._attn_implementation == pair.draft.config._attn_implementation == "sdpa"
    assert load_pair({"source": "tiny", "attn_implementation": "eager"}).target.config._attn_implementation == "eager"


def test_unknown_backend_is_one_clear_error():
    with pytest.raises(ModelLoadError, match="attn_implementation=nope"):
        load_pair({"source": "tiny", "attn_implementation": "nope"})


@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
def test_eager_and_sdpa_give_the_same_exact_tokens(arch):
    """float64: the tree's masked verification equals AR under either backend."""
    prompts = random_prompts(3, seed=17)
    outputs = {}
    for backend in ("eager", "sdpa"):
        pair = tiny_pair(arch, seed=1, dtype=torch.float64, attn_implementation=backend)
        ar = [build_decoder("ar", pair.target).generate(p, 24).tokens for p in prompts]
        tree = build_decoder("tree", pair.target, pair.draft, depth=4, branch=2)
        assert [tree.generate(p, 24).tokens for p in prompts] == ar
        outputs[backend] = ar
    assert outputs["eager"] == outputs["sdpa"]


def test_cli_refuses_flash_attention_for_tree_before_loading(tmp_path):
    proc = run_cli(*FAST, "method=tree", "model.attn_implementation=flash_attention_2", f"results_dir={tmp_path}")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "flash_attention_2" in errors[0] and "tree" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("**/*.json"))
