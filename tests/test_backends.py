"""Pinned attention: every model loads on its config's backend; masked methods refuse one that cannot take a 4D mask."""

from __future__ import annotations

import pytest
import torch

from spec_decode.decoders import build_decoder
from spec_decode.decoders.base import forward
from spec_decode.kv import new_cache
from spec_decode.models import ModelLoadError, check_attention, load_pair, tiny_pair
from tests.conftest import FAST, random_prompts, run_cli

MASKED = ["tree", "streaming_tree", "streaming_linear", "streaming_ar"]


@pytest.mark.parametrize("backend", ["flash_attention_2", "flash_attention_3", "flex_attention", "paged|eager",
                                     "kernels-community/flash-attn"])
@pytest.mark.parametrize("method", MASKED)
def test_masked_methods_refuse_backends_without_4d_masks(backend, method):
    with pytest.raises(ModelLoadError, match=f"attn_implementation={backend}.*{method}"):
        check_attention({"attn_implementation": backend}, ["ar", method])


@pytest.mark.parametrize("backend", ["eager", "sdpa", "sdpa_gqa", None])
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
def test_mask_backends_give_the_same_exact_tokens(arch):
    """float64: the tree's masked verification equals AR (and the streaming tree streaming AR) under each backend."""
    prompts = random_prompts(3, seed=17)
    outputs = {}
    for backend in ("eager", "sdpa", "sdpa_gqa"):
        pair = tiny_pair(arch, seed=1, dtype=torch.float64, attn_implementation=backend)
        tree = build_decoder("tree", pair.target, pair.draft, depth=4, branch=2)
        streaming_tree = build_decoder("streaming_tree", pair.target, pair.draft, depth=3, branch=2, cache_size=30)
        window_ar = {"cache_size": 30 - streaming_tree.lookahead + 1}  # the same window
        ar, streaming_ar = ([build_decoder(name, pair.target, **params).generate(p, 24).tokens for p in prompts]
                            for name, params in (("ar", {}), ("streaming_ar", window_ar)))
        assert [tree.generate(p, 24).tokens for p in prompts] == ar, backend
        assert [streaming_tree.generate(p, 24).tokens for p in prompts] == streaming_ar, backend
        outputs[backend] = ar, streaming_ar
    assert outputs["eager"] == outputs["sdpa"] == outputs["sdpa_gqa"]


def test_sdpa_gqa_shares_kv_heads_in_the_kernel_with_the_same_logits(monkeypatch):
    """float64: a masked 5-token forward after a cached prefix gives sdpa's logits, K/V passed with 2 heads for 4."""
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(query, key, *args, **kwargs):
        calls.append((query.shape[1], key.shape[1], kwargs["enable_gqa"], kwargs["attn_mask"] is not None))
        return sdpa(query, key, *args, **kwargs)

    ids = torch.tensor(random_prompts(1, seed=3, lengths=(12, 12))[0])
    logits = {}
    for backend in ("sdpa", "sdpa_gqa"):
        model = tiny_pair("llama", seed=2, dtype=torch.float64, attn_implementation=backend).target
        if backend == "sdpa_gqa":
            monkeypatch.setattr("spec_decode.models.F.scaled_dot_product_attention", spy)
        cache = new_cache()
        forward(model, ids[:7], cache)
        logits[backend] = forward(model, ids[7:], cache)
    assert torch.allclose(logits["sdpa"], logits["sdpa_gqa"], rtol=0, atol=1e-12)
    assert calls[-1] == (4, 2, True, True)


def test_cli_refuses_flash_attention_for_tree_before_loading(tmp_path):
    proc = run_cli(*FAST, "method=tree", "model.attn_implementation=flash_attention_2", f"results_dir={tmp_path}")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "flash_attention_2" in errors[0] and "tree" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("**/*.json"))
