"""Retrieval: the context's earlier continuations as tree branches (method=retrieval, the tree's lookup_branches):
the longest matches first, shared prefixes merged, exact against AR."""

from __future__ import annotations

import pytest
import torch

from spec_decode.decoders import build_decoder, validate_method
from spec_decode.decoders.base import Fallback
from spec_decode.lookup import LengthByMatch, retrieve_continuations
from spec_decode.tree import TokenTree
from tests.conftest import assert_edge_cases_match_ar, random_prompts

SHAPES = [{"lookup": 8, "branches": 4, "ngram": 4}, {"lookup": 3, "branches": 1, "ngram": 1},
          {"lookup": 1, "branches": 6, "ngram": 2}, {"lookup": 6, "branches": 2, "ngram": 3, "adaptive": True}]
LOOP = [5, 6, 7, 8, 9] * 6  # a looping text: every suffix has earlier continuations


def ar_tokens(pair, prompt, max_new_tokens, eos=None):
    return build_decoder("ar", pair.target).generate(prompt, max_new_tokens, eos).tokens


@pytest.mark.parametrize("params", SHAPES, ids=str)
def test_retrieval_emits_ar_tokens(pair64, params):
    decoder = build_decoder("retrieval", pair64.target, **params)
    for i, prompt in enumerate([*random_prompts(5, seed=23), LOOP]):
        assert decoder.generate(prompt, 40).tokens == ar_tokens(pair64, prompt, 40), f"prompt {i}"


@pytest.mark.parametrize("params", SHAPES, ids=str)
def test_retrieval_eos_inside_a_round_one_token_prompts_and_short_budgets(pair64, params):
    decoder = build_decoder("retrieval", pair64.target, fallback=False, **params)
    assert_edge_cases_match_ar(pair64, decoder, LOOP)


def test_the_tree_with_several_lookup_branches_emits_ar_tokens(pair64):
    params = {"depth": 4, "branch": 2, "max_nodes": 6, "lookup": 6, "ngram": 3, "lookup_branches": 3,
              "lookup_first": True, "recycle": 4, "budget_split": True}
    decoder = build_decoder("tree", pair64.target, pair64.draft, **params)
    for i, prompt in enumerate([*random_prompts(4, seed=29), LOOP, [3]]):
        assert decoder.generate(prompt, 40).tokens == ar_tokens(pair64, prompt, 40), f"prompt {i}"


def expected_rounds(prompt, tokens, lookup, branches, ngram, done=1):
    """Tokens per round had each round accepted the longest prefix of the AR text that a retrieved branch holds
    (from the `done`-th token on; the prefill emitted the first)."""
    rounds = []
    while done < len(tokens):
        left = len(tokens) - done
        chains, counts, _ = retrieve_continuations(torch.tensor(prompt + tokens[:done]), ngram, min(lookup, left - 1),
                                                   branches) if left > 1 else (torch.zeros(0, 0), [], None)
        best = 0
        for chain, count in zip(chains.tolist(), list(counts), strict=True):
            match = 0
            while match < int(count) and chain[match] == tokens[done + match]:
                match += 1
            best = max(best, match)
        rounds.append(best + 1)
        done += best + 1
    return rounds


def test_each_round_accepts_the_longest_ar_prefix_a_retrieved_branch_holds(pair64):
    knobs = {"lookup": 6, "branches": 3, "ngram": 3}
    decoder = build_decoder("retrieval", pair64.target, fallback=False, **knobs)
    multi = 0
    for prompt in [LOOP, list(range(100, 112)), *random_prompts(3, seed=31)]:
        tokens = ar_tokens(pair64, prompt, 48)
        rounds = decoder.generate(prompt, 48).stats.emitted_per_round
        assert rounds == expected_rounds(prompt, tokens, **knobs)
        multi += sum(r > 1 for r in rounds)
    assert multi > 0  # some rounds accepted retrieved tokens: the comparison is not all single steps


def test_grafted_continuations_share_their_common_prefixes():
    tree = TokenTree(0, reserve=9)
    tree.reset(torch.tensor(0))
    tree.graft_all(torch.tensor([[1, 2, 3], [1, 2, 4], [5, 6, 7]]), torch.tensor([3, 3, 2]))
    n = tree.compact()
    assert n == 7  # root, 1, 2, 3, 4 (a sibling of 3), 5, 6 (7 is past its count)
    nodes = dict(zip(tree.tokens[:n].tolist(), tree.parents[:n].tolist(), strict=True))
    assert nodes == {0: 0, 1: 0, 2: 1, 3: 2, 4: 2, 5: 0, 6: 5}


def test_bad_retrieval_knobs_are_refused():
    for knobs, word in (({"lookup": 0}, "lookup"), ({"branches": 0}, "branches"), ({"ngram": 1.5}, "ngram"),
                        ({"fallback": "no"}, "fallback")):
        with pytest.raises(ValueError, match=word):
            validate_method("retrieval", knobs)
    with pytest.raises(ValueError, match="lookup_branches"):
        validate_method("tree", {"depth": 4, "branch": 2, "lookup": 4, "lookup_branches": 0})


def test_retrieval_returns_the_longest_matches_first_then_the_most_recent():
    #                          0  1  2  3  4  5  6  7  8  9 10 11 12 13
    context = torch.tensor([1, 2, 3, 9, 5, 2, 3, 7, 8, 3, 4, 1, 2, 3])
    tokens, counts, _ = retrieve_continuations(context, max_ngram=4, length=3, branches=4)
    # suffix (1,2,3) matched in full ending at 2; (2,3) ending at 6; (3) ending at 9; nothing else
    assert tokens[:3].tolist() == [[9, 5, 2], [7, 8, 3], [4, 1, 2]]
    assert counts.tolist() == [3, 3, 3, 0]


def test_retrieval_counts_a_continuation_cut_by_the_context_end_and_no_match():
    tokens, counts, _ = retrieve_continuations(torch.tensor([4, 5, 4]), max_ngram=2, length=5, branches=2)
    assert tokens[0, :2].tolist() == [5, 4] and counts.tolist() == [2, 0]
    assert retrieve_continuations(torch.tensor([1, 2, 3]), 2, 4, 2)[1].tolist() == [0, 0]
    assert retrieve_continuations(torch.tensor([7]), 2, 4, 2)[1].tolist() == [0, 0]


def test_one_branch_is_the_latest_longest_match_padded_and_counted():
    tokens, count, _ = retrieve_continuations(torch.tensor([1, 2, 3, 9, 1, 2, 4, 5, 1, 2]), 3, length=4, branches=1)
    assert count.tolist() == [4] and tokens[0].tolist() == [4, 5, 1, 2]  # latest earlier "1 2": then 4 5 1 2
    tokens, count, _ = retrieve_continuations(torch.tensor([7, 8, 9, 7, 8]), 2, length=5, branches=1)
    assert count.tolist() == [3] and tokens[0, :3].tolist() == [9, 7, 8]


class FixedLength(LengthByMatch):
    """Verifies `length` tokens of every match, whatever it learned."""

    def __init__(self, length: int):
        super().__init__(ngram=3, lookup=6)
        self.length = length

    def choose(self, matched: int, rows: int, limit: int) -> int:
        return min(self.length, limit) if rows else 0


def test_adaptive_retrieval_verifies_the_chosen_length_down_to_ar_steps(pair64):
    decoder = build_decoder("retrieval", pair64.target, lookup=6, branches=2, ngram=3, adaptive=True)
    tokens = ar_tokens(pair64, LOOP, 40)
    decoder.lengths = FixedLength(0)
    out = decoder.generate(LOOP, 40)
    assert out.tokens == tokens and set(out.stats.tree_nodes_per_round) == {0}
    decoder.lengths = FixedLength(6)
    rounds = decoder.generate(LOOP, 40).stats.emitted_per_round
    assert rounds == expected_rounds(LOOP, tokens, 6, 2, 3) and max(rounds) > 1
    decoder.lengths = FixedLength(2)
    assert decoder.generate(LOOP, 40).stats.emitted_per_round == expected_rounds(LOOP, tokens, 2, 2, 3)


def test_length_by_match_counts_acceptance_per_match_length_censored_at_the_verified_length():
    lengths = LengthByMatch(ngram=2, lookup=3, decay=1.0)
    assert lengths.expected_tokens(1).tolist() == [1.0, 1.5, 1.75, 1.875]  # the prior: each token 1 of 2
    lengths.observe(matched=2, verified=3, accepted=1, nodes=3, seconds=1.0)  # token 1 passed, 2 failed, 3 untried
    lengths.observe(matched=2, verified=1, accepted=1, nodes=1, seconds=1.0)  # token 1 passed, 2 not verified
    assert lengths.passed[2].tolist() == [0, 2, 0, 0] and lengths.tried[2].tolist() == [0, 2, 1, 0]
    assert not lengths.tried[1].any()  # other match lengths keep the prior
    assert lengths.expected_tokens(2) == pytest.approx([1, 1.75, 2.0, 2.125])  # p = 3/4, 1/3, 1/2


def test_a_match_length_that_always_fails_gets_ar_steps_and_probes_one_that_always_passes_its_full_length():
    lengths = LengthByMatch(ngram=2, lookup=4, probe=4)
    assert lengths.choose(1, rows=1, limit=4) == 4 and lengths.choose(1, rows=0, limit=4) == 0  # costs unknown
    for _ in range(20):  # an AR step costs 1 s, each verified node 0.25 s more
        lengths.observe(matched=0, verified=0, accepted=0, nodes=0, seconds=1.0)
        lengths.observe(matched=1, verified=4, accepted=0, nodes=4, seconds=2.0)
        lengths.observe(matched=2, verified=4, accepted=4, nodes=4, seconds=2.0)
    assert lengths.costs() == pytest.approx([1.0, 0.25])
    assert lengths.choose(2, rows=1, limit=4) == 4 and lengths.choose(2, rows=1, limit=2) == 2
    assert [lengths.choose(1, rows=1, limit=4) for _ in range(8)] == [0, 0, 0, 1, 0, 0, 0, 1]


class AlwaysFallback(Fallback):
    """The first round speculates, every later one is a fallback round."""

    def record(self, speculated: bool, seconds: float, tokens: int) -> None:
        self.speculate = False


class AlwaysChains(Fallback):
    """A fallback round is always the lookup chains alone, whatever they cost."""

    def record(self, speculated: bool, seconds: float, tokens: int) -> None:
        self.speculate = True


@pytest.mark.parametrize("recycle", [0, 6])
def test_the_tree_s_fallback_round_is_its_lookup_chains_alone(pair64, recycle):
    knobs = {"lookup": 6, "ngram": 3, "lookup_branches": 2}
    decoder = build_decoder("tree", pair64.target, pair64.draft, depth=4, branch=2, recycle=recycle, **knobs)
    multi = 0
    for prompt in [LOOP, list(range(100, 112)), *random_prompts(2, seed=37)]:
        decoder.chooser, decoder.chains_chooser = AlwaysFallback(), AlwaysChains()
        out = decoder.generate(prompt, 40)
        tokens, s = ar_tokens(pair64, prompt, 40), out.stats
        assert out.tokens == tokens and s.fallback_rounds == s.rounds - 1
        first = s.emitted_per_round[0]
        assert s.emitted_per_round[1:] == expected_rounds(prompt, tokens, knobs["lookup"], 2, 3, done=1 + first)
        assert s.draft_forwards <= 4 + 1  # the first round's levels (and catch-up) only
        multi += sum(r > 1 for r in s.emitted_per_round[1:])
    assert multi > 0


class PricedChains(Fallback):
    """The real chooser fed synthetic seconds: a chains-alone round costs 2 s a token, an AR step 1 s."""

    def record(self, speculated: bool, seconds: float, tokens: int) -> None:
        super().record(speculated, 2.0 * tokens if speculated else 1.0, tokens)


def test_a_fallback_round_is_an_ar_step_where_the_chains_cost_more(pair64):
    """Chains that cost more per token than AR steps give way to AR steps (no node verified), probed again later;
    the tokens stay AR's."""
    decoder = build_decoder("tree", pair64.target, pair64.draft, depth=4, branch=2, lookup=6, ngram=3)
    decoder.chooser, decoder.chains_chooser = AlwaysFallback(), PricedChains(probe=4, settle=False)
    out = decoder.generate(LOOP, 40)
    s = out.stats
    assert out.tokens == ar_tokens(pair64, LOOP, 40) and s.fallback_rounds == s.rounds - 1
    assert not decoder.chains_chooser.best
    assert s.tree_nodes_per_round[1:].count(0) > len(s.tree_nodes_per_round) // 2
