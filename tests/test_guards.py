"""Decoder guards: NaN/inf logits stop generation clearly; acceptance counts only emitted tokens; refused knobs."""

from __future__ import annotations

import pytest
import torch

from spec_decode.decoders import NonFiniteLogitsError, build_decoder, validate_method
from tests.conftest import random_prompts

OURS = [("ar", {}), ("linear", {"k": 4}), ("linear", {"k": 4, "confidence": 0.3}),
        ("tree", {"depth": 4, "branch": 2, "threshold": 0.05, "max_nodes": 10}),
        ("tree", {"depth": 4, "branch": 2, "max_nodes": 10, "lookup": 6, "lookup_first": True})]


def poison(model, value: float, from_call: int):
    """Make `model`'s logits `value` from its `from_call`-th forward on (1-based); returns the hook handle."""
    calls = []

    def hook(module, args, output):
        calls.append(1)
        if len(calls) >= from_call:
            output.logits = torch.full_like(output.logits, value)
        return output

    return model.register_forward_hook(hook)


@pytest.mark.parametrize(("method", "params"), OURS, ids=str)
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_target_logits_stop_with_a_clear_error(pair, method, params, value):
    decoder = build_decoder(method, pair.target, pair.draft, **params)
    handle = poison(pair.target, value, from_call=3)  # prefill is round 0: the third target forward is round 2
    try:
        with pytest.raises(NonFiniteLogitsError, match=r"target model produced NaN/inf logits in round 2 .*float32"):
            decoder.generate(random_prompts(1, seed=1)[0], 30)
    finally:
        handle.remove()


@pytest.mark.parametrize(("method", "params"), OURS[1:], ids=str)
def test_non_finite_draft_logits_stop_with_a_clear_error(pair, method, params):
    decoder = build_decoder(method, pair.target, pair.draft, **params)
    handle = poison(pair.draft, float("nan"), from_call=1)
    try:
        with pytest.raises(NonFiniteLogitsError, match=r"draft model produced NaN/inf logits in round 1 "):
            decoder.generate(random_prompts(1, seed=1)[0], 30)
    finally:
        handle.remove()


def test_non_finite_error_is_a_runtime_error():
    assert issubclass(NonFiniteLogitsError, RuntimeError)


@pytest.mark.parametrize(("method", "params"), [("linear", {"k": 6}), ("tree", {"depth": 6, "branch": 2}),
                                                ("tree", {"depth": 2, "branch": 2, "lookup": 12, "ngram": 1})],
                         ids=str)
def test_eos_inside_a_round_counts_only_emitted_tokens(pair64, method, params):
    """With the target as its own draft every drafted token is right; EOS as AR's third token cuts round one."""
    prompt = [5, 6, 7, 8, 9] * 4
    free_run = build_decoder("ar", pair64.target).generate(prompt, 12).tokens
    eos = free_run[2]
    assert eos not in free_run[:2]
    out = build_decoder(method, pair64.target, pair64.target, **params).generate(prompt, 60, eos)
    assert out.tokens == free_run[:3]
    s = out.stats
    assert s.emitted_per_round == [2] and s.accepted_per_round == [2] and s.accepted == 2
    # drafted counts the round's draft up to the EOS depth: K=6 -> 2 tokens; a full binary tree -> 2 + 4 nodes
    expected = {"linear": 2, "tree": 6 if not params.get("lookup") else s.drafted_per_round[0]}[method]
    assert s.drafted_per_round == [expected]
    if method == "tree":
        assert 2 <= s.drafted_per_round[0] <= s.tree_nodes_per_round[0]


@pytest.mark.parametrize(("method", "params"), OURS[1:], ids=str)
def test_accepted_never_exceeds_emitted(pair64, method, params):
    prompt = random_prompts(1, seed=3)[0]
    eos = build_decoder("ar", pair64.target).generate(prompt, 60).tokens[25]
    s = build_decoder(method, pair64.target, pair64.draft, **params).generate(prompt, 60, eos).stats
    assert all(a < e or (a == e and i == s.rounds - 1) for i, (a, e) in
               enumerate(zip(s.accepted_per_round, s.emitted_per_round, strict=True)))
    assert all(a <= d for a, d in zip(s.accepted_per_round, s.drafted_per_round, strict=True))


def test_budget_auto_with_lookup_is_refused():
    with pytest.raises(ValueError, match="lookup chain nodes would be misbudgeted"):
        validate_method("tree", {"depth": 4, "branch": 2, "lookup": 8, "budget": "auto"})
    validate_method("tree", {"depth": 4, "branch": 2, "lookup": 0, "budget": "auto"})
    validate_method("tree", {"depth": 4, "branch": 2, "lookup": 8, "budget": "fixed"})
