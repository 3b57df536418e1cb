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

KNOBS = [("eagle", {"k": 1}), ("eagle", {"k": 3}), ("eagle", {"k": 6}), ("eagle", {"k": 5, "confidence": 0.4}),
         ("eagle_tree", {"depth": 4, "branch": 2}),
         ("eagle_tree", {"depth": 6, "branch": 3, "threshold": 0.05, "max_nodes": 12}),
         ("eagle_tree", {"depth": 5, "branch": 2, "max_nodes": 8, "lookup": 6, "ngram": 2, "lookup_first": True}),
         ("eagle_tree", {"depth": 4, "branch": 2, "max_nodes": 8, "lookup": 4, "recycle": 4, "budget_split": True})]


def eagle(pair, method="eagle", **knobs):
    return build_decoder(method, pair.target, pair.draft_for(method), **({"fallback": False} | knobs))


@pytest.mark.parametrize(("method", "knobs"), KNOBS, ids=str)
def test_feature_methods_match_ar_on_many_prompts(pair64, method, knobs):
    decoder, ar = eagle(pair64, method, **knobs), build_decoder("ar", pair64.target)
    for prompt in random_prompts(6, seed=11):
        assert decoder.generate(prompt, 40).tokens == ar.generate(prompt, 40).tokens


@pytest.mark.parametrize(("method", "knobs"), [("eagle", {"k": 4}), ("eagle_tree", {"depth": 6, "branch": 2})])
def test_feature_methods_edge_cases_match_ar(pair64, method, knobs):
    prompt = random_prompts(1, seed=5, lengths=(12, 20))[0]
    assert_edge_cases_match_ar(pair64, eagle(pair64, method, **knobs), prompt)


@pytest.mark.parametrize(("method", "knobs"), [("eagle", {"k": 4}), ("eagle_tree", {"depth": 4, "branch": 2})])
def test_feature_methods_with_fallback_match_ar_in_float32(pair, method, knobs):
    decoder, ar = eagle(pair, method, fallback=True, **knobs), build_decoder("ar", pair.target)
    for prompt in random_prompts(3, seed=7):
        assert decoder.generate(prompt, 32).tokens == ar.generate(prompt, 32).tokens


@pytest.mark.parametrize(("method", "knobs"), [("eagle", {"k": 4}), ("eagle_tree", {"depth": 4, "branch": 2})])
def test_the_llama_feature_draft_gets_drafts_accepted(method, knobs):
    """The tiny Llama feature draft agrees often enough for the exactness tests to cover accepted runs."""
    pair = tiny_pair("llama", seed=1, dtype=torch.float64)
    stats = [eagle(pair, method, **knobs).generate(p, 40).stats for p in random_prompts(4, seed=3)]
    assert sum(s.accepted for s in stats) >= 0.5 * sum(s.rounds for s in stats)


@pytest.mark.parametrize(("method", "knobs"), [("eagle", {"k": 3}), ("eagle_tree", {"depth": 4, "branch": 2})])
def test_every_catch_up_reads_the_target_state_of_the_position_before(pair64, monkeypatch, method, knobs):
    """The draft's input at position p is the target's last hidden state at p - 1 (zeros at p = 0), as a single
    target forward over the finished text computes it."""
    decoder = eagle(pair64, method, **knobs)
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


@pytest.mark.parametrize(("method", "knobs"), [("eagle", {"k": 4}), ("eagle_tree", {"depth": 4, "branch": 3})])
def test_draft_steps_read_the_draft_predicted_state_of_their_parent(pair64, monkeypatch, method, knobs):
    """Within a round every fed node reads a state the draft itself predicted one call before (a chain: the last
    token's; a tree level: its parent's, which for the first level is the catch-up's last row)."""
    decoder = eagle(pair64, method, **knobs)
    calls = []
    feed = decoder._feed

    def spy(model, cache, ids, start, *args, features=None, **kwargs):
        logits = feed(model, cache, ids, start, *args, features=features, **kwargs)
        if model is decoder.draft:
            calls.append((kwargs.get("last_only", False), features.clone(), decoder.last_hidden["draft"].clone()))
        return logits

    monkeypatch.setattr(decoder, "_feed", spy)
    decoder.generate(random_prompts(1, seed=4, lengths=(8, 8))[0], 30)
    steps = 0
    for (_, _, before), (catch_up, features, _) in zip(calls, calls[1:], strict=False):
        if catch_up:
            continue
        parents = before[-1:] if len(before) > 1 and method == "eagle" else before
        assert all((parents == row).all(-1).any() for row in features)
        steps += 1
    assert steps > 5
