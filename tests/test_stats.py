"""Per-generation statistics are complete and consistent with the tokens produced."""

from __future__ import annotations

import pytest

from spec_decode.decoders import build_decoder
from tests.conftest import random_prompts

OURS = [("ar", {}), ("linear", {"k": 4}), ("tree", {"depth": 4, "branch": 3, "threshold": 0.05, "max_nodes": 10})]


@pytest.mark.parametrize(("method", "params"), OURS)
def test_round_statistics_add_up(pair, method, params):
    decoder = build_decoder(method, pair.target, pair.draft, **params)
    out = decoder.generate(random_prompts(1, seed=2)[0], 57)
    s = out.stats
    assert len(out.tokens) == 57
    assert sum(s.emitted_per_round) + 1 == len(out.tokens)
    assert s.target_forwards == s.rounds + 1
    assert len(s.round_times_s) == len(s.drafted_per_round) == len(s.accepted_per_round) == s.rounds
    assert all(a <= d for a, d in zip(s.accepted_per_round, s.drafted_per_round, strict=True))
    assert all(e == a + 1 for e, a in zip(s.emitted_per_round, s.accepted_per_round, strict=True))
    assert 0 < s.ttft_s <= s.total_s
    assert all(t > 0 for t in s.round_times_s)
    if method == "ar":
        assert s.draft_forwards == 0 and s.drafted == 0
    if method == "tree":
        assert len(s.tree_nodes_per_round) == s.rounds
        assert max(s.tree_nodes_per_round) <= 10
        assert s.draft_forwards <= 4 * s.rounds


def test_hf_assisted_statistics(pair):
    decoder = build_decoder("hf_assisted", pair.target, pair.draft, num_assistant_tokens=4,
                            num_assistant_tokens_schedule="constant")
    assert decoder.params()["num_assistant_tokens"] == 4
    assert decoder.params()["assistant_confidence_threshold"] == 0.4  # transformers' default, recorded
    out = decoder.generate(random_prompts(1, seed=4)[0], 40)
    s = out.stats
    assert sum(s.emitted_per_round) == len(out.tokens) == 40
    assert s.target_forwards == s.rounds
    assert s.draft_forwards > 0 and 0 < s.ttft_s <= s.total_s


def test_bad_parameters_raise_clear_errors(pair):
    for method, params in [("linear", {"k": 0}), ("tree", {"depth": 0, "branch": 2}),
                           ("tree", {"depth": 2, "branch": 0}), ("tree", {"depth": 2, "branch": 2, "threshold": 1.5}),
                           ("tree", {"depth": 2, "branch": 2, "max_nodes": 0}), ("nope", {})]:
        with pytest.raises(ValueError):
            build_decoder(method, pair.target, pair.draft, **params)
    with pytest.raises(ValueError, match="max_new_tokens"):
        build_decoder("ar", pair.target).generate([1, 2], 0)
    with pytest.raises(ValueError, match="at least one token"):
        build_decoder("ar", pair.target).generate([], 5)


def test_profile_and_trace_leave_tokens_unchanged(pair):
    prompt = random_prompts(1, seed=6)[0]
    params = {"depth": 3, "branch": 2, "threshold": 0.05, "max_nodes": 8}
    plain = build_decoder("tree", pair.target, pair.draft, **params).generate(prompt, 30)
    decoder = build_decoder("tree", pair.target, pair.draft, **params)
    decoder.profile, decoder.trace_rounds = True, 2
    out = decoder.generate(prompt, 30)
    assert out.tokens == plain.tokens
    s = out.stats
    assert len(s.target_forward_s_per_round) == len(s.draft_forward_s_per_round) == s.rounds
    assert all(0 < t <= r for t, r in zip(s.target_forward_s_per_round, s.round_times_s, strict=True))
    assert len(s.trace) == 2
    first = s.trace[0]
    assert first["accepted"][0] == 0 and first["parent"][0] == -1
    assert len(first["token"]) == len(first["target_next"]) == s.tree_nodes_per_round[0] + 1
    assert all(p["prob"] < params["threshold"] for p in first["pruned"]) or len(first["token"]) == 9
