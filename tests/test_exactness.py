"""Greedy exactness: every speculative method emits exactly the target's greedy AR tokens."""

from __future__ import annotations

import zlib

import pytest
import torch

from spec_decode.decoders import build_decoder
from spec_decode.models import tiny_pair
from tests.conftest import random_prompts

METHODS = [
    ("linear", {"k": 1}),
    ("linear", {"k": 4}),
    ("linear", {"k": 8}),
    ("linear", {"k": 6, "confidence": 0.4}),
    ("linear", {"k": 20, "confidence": 0.9}),
    ("linear", {"k": 3, "confidence": 1.0}),
    ("tree", {"depth": 4, "branch": 2}),
    ("tree", {"depth": 6, "branch": 3, "threshold": 0.05, "max_nodes": 40}),
    ("tree", {"depth": 3, "branch": 4, "threshold": 0.0, "max_nodes": 1_000}),
    ("tree", {"depth": 5, "branch": 1}),
    ("tree", {"depth": 4, "branch": 3, "threshold": 1.0}),
    ("tree", {"depth": 4, "branch": 3, "max_nodes": 1}),
    ("tree", {"depth": 8, "branch": 2, "threshold": 0.02, "max_nodes": 7}),
    ("tree", {"depth": 4, "branch": 2, "threshold": 0.05, "max_nodes": 10, "lookup": 6}),
    ("tree", {"depth": 2, "branch": 2, "max_nodes": 3, "lookup": 8, "ngram": 1}),
    ("tree", {"depth": 4, "branch": 1, "threshold": 0.3, "lookup": 16, "ngram": 2, "lookup_first": True}),
    ("tree", {"depth": 6, "branch": 2, "threshold": 0.3, "max_nodes": 8, "lookup": 5, "lookup_first": True}),
    ("hf_assisted", {}),
    ("hf_assisted", {"num_assistant_tokens": 3, "num_assistant_tokens_schedule": "heuristic"}),
    ("hf_lookup", {"prompt_lookup_num_tokens": 4}),
]


def ar_tokens(pair, prompt, max_new_tokens, eos=None):
    return build_decoder("ar", pair.target).generate(prompt, max_new_tokens, eos).tokens


@pytest.mark.parametrize(("method", "params"), METHODS, ids=lambda x: str(x))
def test_matches_ar_on_many_prompts(pair64, method, params):
    decoder = build_decoder(method, pair64.target, pair64.draft, **params)
    for seed, prompt in enumerate(random_prompts(6, seed=zlib.crc32(f"{method}{params}".encode()) % 1000)):
        expected = ar_tokens(pair64, prompt, 40)
        assert decoder.generate(prompt, 40).tokens == expected, f"prompt {seed}"


@pytest.mark.parametrize(("method", "params"), METHODS[:12], ids=lambda x: str(x))
def test_matches_ar_in_float32(pair, method, params):
    decoder = build_decoder(method, pair.target, pair.draft, **params)
    for prompt in random_prompts(3, seed=7):
        assert decoder.generate(prompt, 32).tokens == ar_tokens(pair, prompt, 32)


@pytest.mark.parametrize("max_new_tokens", [1, 2, 3, 5])
@pytest.mark.parametrize(("method", "params"), [("linear", {"k": 6}), ("tree", {"depth": 6, "branch": 2}),
                                                ("hf_assisted", {})])
def test_fewer_new_tokens_than_draft_length(pair64, method, params, max_new_tokens):
    decoder = build_decoder(method, pair64.target, pair64.draft, **params)
    for prompt in random_prompts(3, seed=11):
        out = decoder.generate(prompt, max_new_tokens).tokens
        assert out == ar_tokens(pair64, prompt, max_new_tokens)
        assert len(out) == max_new_tokens


@pytest.mark.parametrize(("method", "params"), METHODS, ids=lambda x: str(x))
def test_eos_mid_round_stops_exactly_where_ar_stops(pair64, method, params):
    prompt = random_prompts(1, seed=3)[0]
    free_run = ar_tokens(pair64, prompt, 60)
    eos = free_run[25]
    expected = ar_tokens(pair64, prompt, 60, eos)
    assert expected[-1] == eos and len(expected) <= 26
    decoder = build_decoder(method, pair64.target, pair64.draft, **params)
    assert decoder.generate(prompt, 60, eos).tokens == expected


@pytest.mark.parametrize(("method", "params"), METHODS, ids=lambda x: str(x))
def test_one_token_prompt(pair64, method, params):
    decoder = build_decoder(method, pair64.target, pair64.draft, **params)
    for token in (0, 97, 255):
        assert decoder.generate([token], 24).tokens == ar_tokens(pair64, [token], 24)


@pytest.mark.parametrize(("method", "params"), [("linear", {"k": 5}), ("tree", {"depth": 5, "branch": 2}),
                                                ("tree", {"depth": 4, "branch": 2, "max_nodes": 10, "lookup": 8}),
                                                ("tree", {"depth": 8, "branch": 3, "threshold": 0.03,
                                                          "max_nodes": 64})])
def test_long_generation_across_many_rounds(pair, method, params):
    prompt = random_prompts(1, seed=5)[0]
    out = build_decoder(method, pair.target, pair.draft, **params).generate(prompt, 400)
    assert out.stats.rounds > 40
    assert out.tokens == ar_tokens(pair, prompt, 400)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_across_model_seeds(seed):
    pair = tiny_pair("llama", seed=seed + 10, dtype=torch.float64)
    decoder = build_decoder("tree", pair.target, pair.draft, depth=5, branch=3, threshold=0.01, max_nodes=30)
    for prompt in random_prompts(4, seed=seed):
        assert decoder.generate(prompt, 48).tokens == ar_tokens(pair, prompt, 48)


def test_perfect_draft_accepts_whole_path(pair64):
    """With the target as its own draft, every round accepts the full depth (exercises the gather fully)."""
    prompt = random_prompts(1, seed=9)[0]
    for method, params, per_round in [("linear", {"k": 4}, 5), ("tree", {"depth": 4, "branch": 2}, 5)]:
        out = build_decoder(method, pair64.target, pair64.target, fallback=False, **params).generate(prompt, 31)
        assert out.tokens == ar_tokens(pair64, prompt, 31)
        assert out.stats.emitted_per_round == [per_round] * 6


def test_branch_one_tree_equals_linear(pair64):
    """B=1 (no pruning) drafts the same chain as Linear with K=D, so rounds coincide too (no AR fallback steps)."""
    for prompt in random_prompts(4, seed=13):
        tree = build_decoder("tree", pair64.target, pair64.draft, depth=4, branch=1, fallback=False)
        linear = build_decoder("linear", pair64.target, pair64.draft, k=4, fallback=False)
        tree, linear = tree.generate(prompt, 50), linear.generate(prompt, 50)
        assert tree.tokens == linear.tokens
        assert tree.stats.emitted_per_round == linear.stats.emitted_per_round


def test_confidence_stops_drafting_early(pair64):
    """A confidence threshold shortens rounds (never past K) and keeps the tokens; 1.0 drafts one token a round."""
    prompt = random_prompts(1, seed=21)[0]
    linear = {"k": 6, "fallback": False}  # every round drafts
    full = build_decoder("linear", pair64.target, pair64.draft, **linear).generate(prompt, 60)
    short = build_decoder("linear", pair64.target, pair64.draft, confidence=0.6, **linear).generate(prompt, 60)
    single = build_decoder("linear", pair64.target, pair64.draft, confidence=1.0, **linear).generate(prompt, 60)
    assert short.tokens == full.tokens == single.tokens
    assert max(short.stats.drafted_per_round) <= 6 and min(short.stats.drafted_per_round[:-1]) >= 1
    assert short.stats.drafted < full.stats.drafted
    assert set(single.stats.drafted_per_round[:-1]) == {1}


def test_lookup_first_skips_draft_levels_when_text_repeats(pair64):
    """On a looping text the lookup chain replaces the deeper draft levels: fewer draft forwards, same tokens."""
    prompt = [5, 6, 7, 8, 9] * 8
    knobs = {"depth": 4, "branch": 2, "threshold": 0.0, "max_nodes": 8, "lookup": 10, "ngram": 2, "fallback": False}
    plain = build_decoder("tree", pair64.target, pair64.draft, **knobs).generate(prompt, 60)
    first = build_decoder("tree", pair64.target, pair64.draft, lookup_first=True, **knobs).generate(prompt, 60)
    assert first.tokens == plain.tokens == ar_tokens(pair64, prompt, 60)
    assert first.stats.draft_forwards < plain.stats.draft_forwards


@pytest.mark.parametrize("params", [{"depth": 6, "branch": 3, "threshold": 0.1, "max_nodes": 20},
                                    {"depth": 4, "branch": 2, "threshold": 0.2, "max_nodes": 8, "lookup": 6}], ids=str)
def test_target_verifies_live_nodes_only(pair64, params):
    """Dead (pruned) slots are fed to the draft with their level, never to the target."""
    fed: list[int] = []
    hook = pair64.target.register_forward_hook(
        lambda module, args, kwargs, out: fed.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    try:
        out = build_decoder("tree", pair64.target, pair64.draft, **params).generate(random_prompts(1, seed=2)[0], 40)
    finally:
        hook.remove()
    assert fed[1:] == [n + 1 for n in out.stats.tree_nodes_per_round]


def test_draft_gets_live_nodes_only_where_level_counts_arrive_in_time(pair64, monkeypatch):
    """On CPU every level's live count is on the host at once, so no dead slot reaches the draft either."""
    from spec_decode.decoders.tree import TreeDecoder

    levels: list[tuple[int, int]] = []
    draft_level = TreeDecoder._draft_level

    def record(self, level, depth, stats):
        levels.append((level.size, int(self.tree.live[level.start : level.end].sum())))
        return draft_level(self, level, depth, stats)

    monkeypatch.setattr(TreeDecoder, "_draft_level", record)
    params = {"depth": 6, "branch": 3, "threshold": 0.1, "max_nodes": 20}
    out = build_decoder("tree", pair64.target, pair64.draft, **params).generate(random_prompts(1, seed=2)[0], 40)
    assert out.tokens == ar_tokens(pair64, random_prompts(1, seed=2)[0], 40)
    assert levels and all(size == live > 0 for size, live in levels)
