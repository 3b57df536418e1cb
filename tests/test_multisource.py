"""One tree from several sources (draft, lookup chain, recycled table): exact against AR, the template subtree's
shape, and the node budget split by measured acceptance and cost reacting to a source that always fails."""

from __future__ import annotations

import pytest
import torch

from spec_decode.decoders import build_decoder, validate_method
from spec_decode.models import tiny_pair
from spec_decode.recycle import RecycleTable
from spec_decode.split import SourceSplit
from spec_decode.tree import Level, TokenTree
from tests.conftest import assert_edge_cases_match_ar, random_prompts
from tests.test_tree import accept, logits_for

METHODS = [
    {"depth": 4, "branch": 2, "recycle": 8},
    {"depth": 4, "branch": 2, "max_nodes": 10, "recycle": 12, "lookup": 6},
    {"depth": 4, "branch": 2, "max_nodes": 10, "recycle": 12, "lookup": 6, "budget_split": True},
    {"depth": 6, "branch": 2, "threshold": 0.3, "max_nodes": 8, "recycle": 20, "lookup": 5, "lookup_first": True,
     "budget_split": True},
    {"depth": 3, "branch": 3, "max_nodes": 2, "recycle": 30, "budget_split": True},
    {"depth": 5, "branch": 1, "recycle": 1, "lookup": 8, "ngram": 1, "budget_split": True},
]


def ar_tokens(pair, prompt, max_new_tokens, eos=None):
    return build_decoder("ar", pair.target).generate(prompt, max_new_tokens, eos).tokens


@pytest.mark.parametrize("params", METHODS, ids=str)
def test_matches_ar_on_many_prompts(pair64, params):
    decoder = build_decoder("tree", pair64.target, pair64.draft, **params)
    prompts = random_prompts(5, seed=17) + [[5, 6, 7, 8, 9] * 6]  # a looping text: lookup and recycle match
    for i, prompt in enumerate(prompts):
        assert decoder.generate(prompt, 40).tokens == ar_tokens(pair64, prompt, 40), f"prompt {i}"


@pytest.mark.parametrize("params", METHODS, ids=str)
def test_eos_inside_a_round_one_token_prompts_and_short_budgets(pair64, params):
    decoder = build_decoder("tree", pair64.target, pair64.draft, **params)
    prompt = random_prompts(1, seed=3)[0]
    decoder.generate(prompt, 60)  # the table learns this text: later rounds accept several tokens
    assert_edge_cases_match_ar(pair64, decoder, prompt)


def test_append_template_hangs_a_subtree_from_the_root():
    tree = TokenTree(capacity=2, reserve=4)
    tree.reset(torch.tensor(9))
    tree.grow(Level(0, 1), logits_for([{1: 0.6, 2: 0.3}]), branch=2, threshold=0.1)  # nodes 1, 2
    #             template: root, 7, 8 (children of the root), 5 (child of 7), 6 (child of 5)
    parents = torch.tensor([0, 0, 0, 1, 3])
    ancestors = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 0, 1, 0, 0], [1, 1, 0, 1, 0],
                              [1, 1, 0, 1, 1]], dtype=torch.bool)
    live = torch.tensor([True, True, False, True, True])
    level = tree.append_template(torch.tensor([0, 7, 8, 5, 6]), parents, ancestors, live)
    assert (level.start, level.end) == (3, 7)
    assert tree.parents[3:7].tolist() == [0, 0, 3, 5] and tree.depth[3:7].tolist() == [1, 1, 2, 3]
    assert tree.live[3:7].tolist() == [True, False, True, True]
    assert tree.compact() == 6  # the dead template node dropped
    assert tree.tokens[:6].tolist() == [9, 1, 2, 7, 5, 6]
    assert tree.parents[1:6].tolist() == [0, 0, 0, 3, 4] and tree.depth[:6].tolist() == [0, 1, 1, 1, 2, 3]
    assert tree.block(Level(0, 6), 0)[5].nonzero().squeeze(1).tolist() == [0, 3, 4, 5]
    assert tree.block(Level(0, 6), 0)[1].nonzero().squeeze(1).tolist() == [0, 1]
    assert accept(tree, [7, 0, 0, 5, 6, 4]) == ([0, 3, 4, 5], 4)
    with pytest.raises(ValueError, match="no room"):
        tree.append_template(torch.zeros(5, dtype=torch.long), parents, ancestors)


def test_duplicates_of_draft_nodes_are_verified_alongside():
    tree = TokenTree(capacity=2, reserve=2)
    tree.reset(torch.tensor(9))
    tree.grow(Level(0, 1), logits_for([{1: 0.6, 2: 0.3}]), branch=2, threshold=0.1)
    ancestors = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    tree.append_template(torch.tensor([0, 1, 4]), torch.tensor([0, 0, 1]), ancestors)
    assert tree.compact() == 5
    assert accept(tree, [1, 4, 0, 4, 7]) == ([0, 3, 4], 7)  # node 1 agrees too, but only its duplicate goes deeper


@pytest.mark.parametrize("nodes", [1, 3, 10, 48])
def test_the_likeliest_first_order_keeps_every_prefix(nodes):
    recycled = RecycleTable(vocab=16, depth=6, branch=4, nodes=48)
    chosen = recycled.order <= nodes
    assert int(chosen.sum()) == nodes + 1
    assert bool(chosen[recycled.parents[chosen]].all())


def split_plans(caps: dict[str, int], earned: dict[str, int], rounds: int,
                split: SourceSplit | None = None) -> list[dict]:
    """The plans of `rounds` rounds of `split` (default: a fresh one); each source always earns the same depth."""
    split, plans = split or SourceSplit(caps), []
    for _ in range(rounds):
        plans.append(split.plan())
        split.update(plans[-1], earned)
    return plans


def test_split_shrinks_a_failing_source_to_zero_probes_it_and_keeps_an_earning_one():
    plans = split_plans({"draft": 10, "lookup": 0, "recycle": 16}, {"draft": 3, "lookup": 0, "recycle": 0}, 20)
    recycled = [p["recycle"] for p in plans]
    assert recycled[0] == 16 and all(b <= a for a, b in zip(recycled[:8], recycled[1:8], strict=False))
    assert 0 in recycled and recycled[-1] < 16
    first_zero = recycled.index(0)
    assert any(r > 0 for r in recycled[first_zero:])  # probed again after idle rounds
    assert all(p["draft"] == 10 for p in plans)


def test_split_skips_the_draft_while_another_source_earns_more():
    plans = split_plans({"draft": 10, "lookup": 6, "recycle": 16}, {"draft": 1, "lookup": 0, "recycle": 4}, 30)
    drafts = [p["draft"] for p in plans]
    assert drafts[0] == 10 and drafts.count(0) > 20
    assert any(d > 0 for d in drafts[10:])  # the draft is probed now and then
    assert all(p["recycle"] == 16 for p in plans)


def _plans(out) -> list[dict]:
    return [round_["plan"] for round_ in out.stats.trace]


def test_garbage_recycled_table_loses_its_nodes_a_perfect_draft_keeps_them(pair64, monkeypatch):
    params = {"depth": 4, "branch": 2, "max_nodes": 10, "recycle": 16, "budget_split": True, "fallback": False}
    decoder = build_decoder("tree", pair64.target, pair64.target, **params)  # the target drafts for itself
    decoder.trace_rounds = 1000
    monkeypatch.setattr(decoder.recycled, "update", lambda tokens, logits: None)  # the table stays all token 0
    prompt = random_prompts(1, seed=9)[0]
    out = decoder.generate(prompt, 120)
    assert out.tokens == ar_tokens(pair64, prompt, 120)
    recycled = [p["recycle"] for p in _plans(out)]
    assert recycled[0] == 16 and min(recycled) == 0 and sum(recycled[-10:]) < 16
    assert all(p["draft"] == decoder.tree.capacity for p in _plans(out))


def test_a_draft_that_never_agrees_is_skipped_for_a_recycled_table_that_earns(pair64):
    stranger = tiny_pair("llama" if pair64.target.config.model_type != "llama" else "gpt_neox", seed=5,
                         dtype=torch.float64).draft
    stranger = stranger if stranger.config.vocab_size == pair64.target.config.vocab_size else pair64.draft
    prompt = [5, 6, 7, 8, 9, 10, 11] * 5
    params = {"depth": 4, "branch": 2, "max_nodes": 10, "recycle": 24, "fallback": False}  # rounds compared
    plain = build_decoder("tree", pair64.target, stranger, **params)
    plain.generate(prompt, 30)  # the table learns the loop
    split = build_decoder("tree", pair64.target, stranger, budget_split=True, **params)
    split.trace_rounds = 1000
    split.generate(prompt, 30)
    base, out = plain.generate(prompt, 90), split.generate(prompt, 90)
    assert out.tokens == base.tokens == ar_tokens(pair64, prompt, 90)
    drafts = [p["draft"] for p in _plans(out)]
    assert drafts.count(0) > len(drafts) // 2
    assert out.stats.draft_forwards < base.stats.draft_forwards


def test_knobs_are_validated_and_recorded(pair64):
    with pytest.raises(ValueError, match="budget_split must be true or false"):
        validate_method("tree", {"depth": 4, "branch": 2, "budget_split": "yes"})
    with pytest.raises(ValueError, match="recycle must be an integer >= 0"):
        validate_method("tree", {"depth": 4, "branch": 2, "recycle": -1})
    with pytest.raises(ValueError, match="misbudgeted"):
        validate_method("tree", {"depth": 4, "branch": 2, "recycle": 8, "budget": "auto"})
    decoder = build_decoder("tree", pair64.target, pair64.draft, depth=4, branch=2, recycle=8, budget_split=True)
    assert decoder.params() | {"recycle": 8, "budget_split": True} == decoder.params()
    assert decoder.lookahead == decoder.tree.capacity + 8 + 1


def test_draft_cache_holds_only_committed_tokens_when_paths_run_through_recycled_nodes(pair64):
    """A stranger draft and a table that knows the loop: accepted paths run through recycled nodes the draft never
    saw; its cache must still hold exactly the committed tokens' keys (as a fresh prefill computes them)."""
    from spec_decode import kv

    stranger = tiny_pair("llama" if pair64.target.config.model_type != "llama" else "gpt_neox", seed=5,
                         dtype=torch.float64).draft
    prompt = [5, 6, 7, 8, 9, 10, 11] * 5
    decoder = build_decoder("tree", pair64.target, stranger, depth=4, branch=2, max_nodes=10, recycle=24,
                            fallback=False)  # every round speculative: paths through recycled nodes counted
    decoder.trace_rounds = 1000
    decoder.generate(prompt, 30)
    out = decoder.generate(prompt, 60)
    assert out.tokens == ar_tokens(pair64, prompt, 60)
    recycled_paths = sum(any(node > decoder.tree.capacity for node in r["accepted"]) for r in out.stats.trace)
    assert recycled_paths > 3
    held = kv.next_position(decoder.draft_cache)
    assert held <= decoder.length
    with torch.inference_mode():
        fresh = kv.new_cache()
        stranger(input_ids=decoder.committed[:held][None], cache=fresh, use_cache=True)
    for kept, expected in zip(decoder.draft_cache.layers, fresh.layers, strict=True):
        torch.testing.assert_close(kept.keys[..., :held, :], expected.keys)


@pytest.mark.parametrize("cache_size", [48, 80])
def test_streaming_matches_streaming_ar_with_the_same_window(pair64, cache_size):
    params = {"depth": 4, "branch": 2, "max_nodes": 10, "lookup": 4, "recycle": 12, "budget_split": True}
    decoder = build_decoder("streaming_tree", pair64.target, pair64.draft, cache_size=cache_size, **params)
    ar = build_decoder("streaming_ar", pair64.target, cache_size=cache_size - decoder.lookahead + 1)
    assert decoder.window == ar.window
    for prompt in random_prompts(2, seed=4) + [[5, 6, 7, 8, 9, 10] * 6]:
        out = decoder.generate(prompt, 100)
        assert out.tokens == ar.generate(prompt, 100).tokens and out.stats.compressions > 0


def costed_split(caps: dict[str, int], per_node: float) -> SourceSplit:
    """A split whose cost fit has seen rounds of 0.05 s + 0.01 s per draft forward + `per_node` s per node."""
    split = SourceSplit(caps)
    for i in range(40):
        forwards, nodes = i % 4, (5 * i) % 13
        split.observe(forwards, nodes, 0.05 + 0.01 * forwards + per_node * nodes, 2)
    return split


def costed_plans(split: SourceSplit, earned: dict[str, int], rounds: int) -> list[dict]:
    return split_plans(split.caps, earned, rounds, split)


def test_cost_cuts_a_source_that_adds_nothing_beside_a_cheaper_one_and_probes_it():
    caps = {"draft": 0, "lookup": 6, "recycle": 16}
    earned = {"draft": 0, "lookup": 3, "recycle": 2}  # recycled nodes earn, but never beyond the lookup chain
    acceptance_only = split_plans(caps, earned, 20)
    assert all(p["recycle"] == 16 for p in acceptance_only)
    plans = costed_plans(costed_split(caps, per_node=0.003), earned, 20)
    recycled = [p["recycle"] for p in plans]
    assert recycled.count(0) >= 15 and max(recycled) > 0  # cut (16 nodes cost more than 1 token saves), probed
    assert all(p["lookup"] == 6 for p in plans)


def test_cost_keeps_a_source_whose_extra_tokens_pay_and_cuts_a_draft_whose_forwards_do_not():
    caps = {"draft": 10, "lookup": 6, "recycle": 16}
    earned = {"draft": 3, "lookup": 1, "recycle": 5}  # recycle 2 deeper than the rest; the draft adds nothing
    split = costed_split(caps, per_node=0.0005)
    split.observe(4, 26, 0.05 + 0.04 + 0.013, 2)  # the draft ran 4 forwards: 0.04 s it must earn back
    plans = costed_plans(split, earned, 12)
    assert all(p["recycle"] == 16 for p in plans)
    assert [p["draft"] for p in plans[1:8]] == [0] * 7


def test_cost_turns_a_round_whose_leader_does_not_pay_into_an_ar_step():
    caps = {"draft": 0, "lookup": 6, "recycle": 0}
    plans = costed_plans(costed_split(caps, per_node=0.05), {"draft": 0, "lookup": 1, "recycle": 0}, 12)
    assert plans[0]["lookup"] == 0 and [p["lookup"] for p in plans].count(0) >= 10


def test_the_decoder_feeds_every_round_to_the_cost_fit_and_forgets_it_on_reset(pair64):
    decoder = build_decoder("tree", pair64.target, pair64.draft, depth=4, branch=2, max_nodes=10, recycle=12,
                            lookup=6, budget_split=True)
    out = decoder.generate(random_prompts(1, seed=4)[0], 40)
    assert decoder.split.cost.rounds == len(out.stats.round_times_s) > 0
    decoder.reset_state()
    assert decoder.split.cost.rounds == 0


def test_split_cost_false_leaves_the_cost_fit_unfed_and_stays_exact(pair64):
    params = {"depth": 4, "branch": 2, "max_nodes": 10, "recycle": 12, "lookup": 6, "budget_split": True}
    prompt = random_prompts(1, seed=4)[0]
    decoder = build_decoder("tree", pair64.target, pair64.draft, split_cost=False, **params)
    out = decoder.generate(prompt, 40)
    assert decoder.split.cost.rounds == 0 and decoder.params()["split_cost"] is False
    assert out.tokens == build_decoder("ar", pair64.target).generate(prompt, 40).tokens
    with pytest.raises(ValueError, match="split_cost must be true or false"):
        validate_method("tree", params | {"split_cost": "no"})
