"""Sampling at temperature > 0: the knobs, the processed distribution, and the tree methods' coupling with AR.

Every tree method (tree with any sources, recycling, retrieval, streaming) draws output position i's token from
the seed's uniform i, as AR sampling does, so from one seed it emits AR sampling's very tokens (float64: no
rounding differences). Linear speculative sampling has its own randomness: tests/test_lossless.py checks its
distribution statistically.
"""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

from spec_decode.decoders import NEEDS_DRAFT, build_decoder
from spec_decode.sampling import GREEDY, Sampling, draw
from tests.conftest import random_prompts

SETTINGS = [Sampling(temperature=1.0), Sampling(temperature=0.7, top_k=12), Sampling(temperature=1.3, top_p=0.8)]
TREES = [
    ("tree", {"depth": 4, "branch": 2}),
    ("tree", {"depth": 3, "branch": 3, "threshold": 0.1, "max_nodes": 6}),
    ("tree", {"depth": 4, "branch": 2, "lookup": 4, "lookup_branches": 2, "recycle": 8, "budget_split": True}),
    ("tree", {"depth": 3, "branch": 1, "lookup": 6, "ngram": 1, "lookup_first": True}),
    ("recycling", {"depth": 3, "branch": 4, "max_nodes": 12}),
    ("retrieval", {"lookup": 4, "branches": 3, "ngram": 2}),
]


def sampler(pair, name: str, sampling: Sampling, **params):
    decoder = build_decoder(name, pair.target, pair.draft if name in NEEDS_DRAFT else None, **params)
    decoder.sampling = sampling
    return decoder


@pytest.mark.parametrize(("method", "params"), TREES)
@pytest.mark.parametrize("sampling", SETTINGS, ids=["t1", "t0.7-k12", "t1.3-p0.8"])
def test_tree_methods_emit_ar_samplings_tokens_from_the_same_seed(pair64, method, params, sampling):
    ar, decoder = sampler(pair64, "ar", sampling), sampler(pair64, method, sampling, **params)
    for seed, prompt in enumerate(random_prompts(4, seed=11)):
        assert decoder.generate(prompt, 40, seed=seed).tokens == ar.generate(prompt, 40, seed=seed).tokens


@pytest.mark.parametrize(("method", "params"), TREES[:3])
def test_tree_sampling_edge_cases_match_ar(pair64, method, params):
    """EOS inside a round, 1-token prompts, budgets smaller than the tree: still AR sampling's tokens."""
    sampling = SETTINGS[1]
    ar, decoder = sampler(pair64, "ar", sampling), sampler(pair64, method, sampling, **params)
    prompt = random_prompts(1, seed=5)[0]
    eos = ar.generate(prompt, 60, seed=3).tokens[25]
    assert decoder.generate(prompt, 60, eos, seed=3).tokens == ar.generate(prompt, 60, eos, seed=3).tokens
    for token in (0, 97, 255):
        assert decoder.generate([token], 24, seed=token).tokens == ar.generate([token], 24, seed=token).tokens
    for budget in (1, 2, 3, 5):
        assert decoder.generate(prompt, budget, seed=budget).tokens == ar.generate(prompt, budget, seed=budget).tokens


@pytest.mark.parametrize("cache_size", [24, 40])
def test_streaming_tree_sampling_matches_streaming_ar_with_the_same_window(pair64, cache_size):
    params = {"depth": 3, "branch": 2, "max_nodes": 6}
    sampling = SETTINGS[0]
    tree = sampler(pair64, "streaming_tree", sampling, cache_size=cache_size, sink=4, **params)
    ar = sampler(pair64, "streaming_ar", sampling, cache_size=cache_size - tree.lookahead + 1, sink=4)
    for seed, prompt in enumerate(random_prompts(3, seed=2, lengths=(5, 30))):
        assert tree.generate(prompt, 80, seed=seed).tokens == ar.generate(prompt, 80, seed=seed).tokens


@pytest.mark.parametrize(("method", "params"), [("ar", {}), ("linear", {"k": 3, "fallback": False}),
                                                ("tree", {"depth": 3, "branch": 2}), ("hf_assisted", {}),
                                                ("hf_lookup", {})])
def test_a_seed_reproduces_its_sample_and_seeds_differ(pair, method, params):
    """Linear with the AR fallback is exact in distribution but not reproducible: which rounds the fallback runs as
    AR steps depends on timing, and an AR step draws differently from a speculative round."""
    decoder = sampler(pair, method, SETTINGS[0], **params)
    prompt = random_prompts(1, seed=8)[0]
    runs = [decoder.generate(prompt, 30, seed=seed).tokens for seed in (1, 1, 2)]
    assert runs[0] == runs[1] != runs[2]


def test_linear_sampling_accepts_drafts_and_stays_reproducible(pair64):
    """A draft that is the target's first layer gets tokens accepted under sampling too (the rule is not AR)."""
    decoder = sampler(pair64, "linear", SETTINGS[0], k=4, fallback=False)
    out = decoder.generate(random_prompts(1, seed=4)[0], 60, seed=0)
    assert len(out.tokens) == 60 and out.stats.accepted > 0 and out.stats.rounds < 59


def test_linear_confidence_stops_sampled_drafting_early(pair64):
    """A sampled draft token under `confidence` ends the proposal; the verified rows are the proposed ones."""
    decoder = sampler(pair64, "linear", SETTINGS[0], k=6, confidence=0.5, fallback=False)
    out = decoder.generate(random_prompts(1, seed=3)[0], 60, seed=1)
    assert len(out.tokens) == 60 and min(out.stats.drafted_per_round) < 6
    assert all(a <= d for a, d in zip(out.stats.accepted_per_round, out.stats.drafted_per_round, strict=True))


def test_the_tree_grows_within_the_drafts_top_k_when_sampling(pair64):
    """top_k=1: every node's processed draft distribution is one token, so a branch-3 tree is a chain."""
    decoder = sampler(pair64, "tree", Sampling(temperature=1.0, top_k=1), depth=4, branch=3, fallback=False)
    out = decoder.generate(random_prompts(1, seed=6)[0], 30, seed=0)
    assert out.stats.tree_nodes_per_round[:5] == [4] * 5


def test_greedy_is_the_default_and_unchanged(pair64):
    prompt = random_prompts(1, seed=9)[0]
    tree = build_decoder("tree", pair64.target, pair64.draft, depth=3, branch=2)
    assert tree.sampling is GREEDY
    assert tree.generate(prompt, 30, seed=1).tokens == tree.generate(prompt, 30, seed=2).tokens


def test_processed_distribution_is_transformers_warpers_in_generates_order():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sampling = Sampling(temperature=0.6, top_k=10, top_p=0.7)
    scores = logits / 0.6
    for warper in (TopKLogitsWarper(10), TopPLogitsWarper(0.7)):
        scores = warper(None, scores)
    torch.testing.assert_close(sampling.probs(logits), scores.softmax(-1))
    assert (sampling.probs(logits) > 0).sum(-1).le(10).all()
    assert sampling.hf_kwargs() == {"do_sample": True, "temperature": 0.6, "top_p": 0.7, "top_k": 10}
    assert GREEDY.hf_kwargs()["do_sample"] is False


def test_inverse_cdf_draw_follows_the_weights_and_never_picks_a_zero():
    weights = torch.tensor([[0.0, 1.0, 0.0, 3.0], [2.0, 0.0, 2.0, 0.0]], dtype=torch.float64)
    u = torch.tensor([[0.0, 0.249, 0.2501, 0.999999]] * 2, dtype=torch.float64).T  # 4 draws per row
    picked = draw(weights.expand(4, 2, 4), u)
    assert picked[:, 0].tolist() == [1, 1, 3, 3]
    assert picked[:, 1].tolist() == [0, 0, 0, 2]


@pytest.mark.parametrize(("knobs", "named"), [
    ({"temperature": -0.1}, "temperature"), ({"temperature": 1, "top_p": 0.0}, "top_p"),
    ({"temperature": 1, "top_p": 1.5}, "top_p"), ({"temperature": 1, "top_k": -1}, "top_k"),
    ({"temperature": 1, "top_k": 2.5}, "top_k"), ({"top_k": 5}, "temperature > 0"), ({"top_p": 0.9}, "temperature > 0"),
    ({"temperature": "hot"}, "temperature"),
])
def test_bad_sampling_knobs_are_one_clear_error(knobs, named):
    with pytest.raises(ValueError, match=named):
        Sampling(**knobs)
