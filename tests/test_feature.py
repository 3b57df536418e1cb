"""Method eagle: linear speculation with a feature draft that reads the target's hidden states."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from spec_decode import offline
from spec_decode.decoders import build_decoder
from spec_decode.decoders.feature import FeatureLinearDecoder
from spec_decode.models import ModelLoadError, tiny_pair
from tests.conftest import assert_edge_cases_match_ar, random_prompts

KNOBS = [{"k": 1}, {"k": 3}, {"k": 6}, {"k": 5, "confidence": 0.4}]


def eagle(pair, **knobs):
    return build_decoder("eagle", pair.target, pair.draft_for("eagle"), **({"fallback": False} | knobs))


@pytest.mark.parametrize("knobs", KNOBS, ids=str)
def test_eagle_matches_ar_on_many_prompts(pair64, knobs):
    decoder, ar = eagle(pair64, **knobs), build_decoder("ar", pair64.target)
    for prompt in random_prompts(6, seed=11):
        assert decoder.generate(prompt, 40).tokens == ar.generate(prompt, 40).tokens


def test_eagle_edge_cases_match_ar(pair64):
    assert_edge_cases_match_ar(pair64, eagle(pair64, k=4), random_prompts(1, seed=5, lengths=(12, 20))[0])


def test_eagle_with_fallback_matches_ar_in_float32(pair):
    decoder, ar = eagle(pair, k=4, fallback=True), build_decoder("ar", pair.target)
    for prompt in random_prompts(3, seed=7):
        assert decoder.generate(prompt, 32).tokens == ar.generate(prompt, 32).tokens


def test_the_llama_feature_draft_gets_drafts_accepted():
    """The tiny Llama feature draft agrees often enough for the exactness tests to cover accepted runs."""
    pair = tiny_pair("llama", seed=1, dtype=torch.float64)
    stats = [eagle(pair, k=4).generate(p, 40).stats for p in random_prompts(4, seed=3)]
    assert sum(s.accepted for s in stats) >= 0.2 * sum(s.drafted for s in stats)


def test_every_catch_up_reads_the_target_state_of_the_position_before(pair64, monkeypatch):
    """The draft's input at position p is the target's last hidden state at p - 1 (zeros at p = 0), as a single
    target forward over the finished text computes it."""
    decoder = eagle(pair64, k=3)
    fed = []
    feed = decoder._feed

    def spy(model, cache, ids, start, *args, features=None, **kwargs):
        if model is decoder.draft and kwargs.get("last_only"):
            fed.append((start, ids.clone(), features.clone()))
        return feed(model, cache, ids, start, *args, features=features, **kwargs)

    monkeypatch.setattr(decoder, "_feed", spy)
    prompt = random_prompts(1, seed=2, lengths=(10, 10))[0]
    text = torch.tensor(prompt + decoder.generate(prompt, 30).tokens)
    hidden = pair64.target(text[None], output_hidden_states=True).hidden_states[-1][0]
    states = torch.cat([torch.zeros_like(hidden[:1]), hidden])  # row p: the state before position p
    assert len(fed) > 3 and fed[0][0] == 0
    for start, ids, features in fed:
        assert torch.equal(ids, text[start : start + ids.numel()])
        torch.testing.assert_close(features, states[start : start + ids.numel()])


def test_eagle_refuses_a_plain_draft_streaming_and_static_caches(pair):
    with pytest.raises(ValueError, match="feature draft"):
        build_decoder("eagle", pair.target, pair.draft, k=2)
    with pytest.raises(ValueError, match="does not stream"):
        FeatureLinearDecoder.validate(2, cache_size=32)
    decoder = eagle(pair, k=2)
    decoder.static_cache = True
    with pytest.raises(ValueError, match="dynamic caches"):
        decoder.generate([1, 2, 3], 4)


def test_a_pair_without_feature_draft_says_so(pair):
    plain = dataclasses.replace(pair, feature_draft=None)
    assert plain.draft_for("linear") is pair.draft
    with pytest.raises(ModelLoadError, match="model.feature_draft"):
        plain.draft_for("eagle")


def test_a_saved_feature_draft_loads_as_one(tmp_path):
    pair = tiny_pair("llama", seed=0)
    draft = pair.feature_draft
    offline.save_draft(draft, tmp_path)
    loaded = offline.load_draft(tmp_path, pair.target)
    assert isinstance(loaded, offline.FeatureDraftForCausalLM)
    ids, states = torch.tensor([[5, 6, 7]]), torch.randn(1, 3, pair.target.config.hidden_size)
    # saved in float16: the same logits up to its rounding
    torch.testing.assert_close(loaded(ids, states).logits, draft(ids, states).logits, atol=0.05, rtol=0.02)
