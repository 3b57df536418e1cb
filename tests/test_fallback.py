"""The AR fallback: a round becomes a plain AR step where AR steps cost less per token; tokens never change."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from spec_decode.bench import Protocol, run_method
from spec_decode.data import Prompt
from spec_decode.decoders import build_decoder
from spec_decode.decoders.base import Fallback
from spec_decode.metrics import summarize
from tests.conftest import random_prompts

OURS = [("linear", {"k": 4}), ("linear", {"k": 6, "confidence": 0.4}), ("tree", {"depth": 4, "branch": 2}),
        ("tree", {"depth": 5, "branch": 3, "threshold": 0.05, "max_nodes": 12, "lookup": 6}),
        ("tree", {"depth": 4, "branch": 1, "threshold": 0.3, "lookup": 8, "ngram": 2, "lookup_first": True}),
        ("recycling", {"depth": 4, "branch": 3, "max_nodes": 12})]


def ar_tokens(pair, prompt, max_new_tokens, eos=None):
    return build_decoder("ar", pair.target).generate(prompt, max_new_tokens, eos).tokens


def schedule(chooser: Fallback, cost: dict[bool, float], rounds: int, tokens: dict[bool, int] | None = None) -> str:
    """The kinds of `rounds` rounds ('S' speculative, 'A' AR) when a round of each kind costs `cost` seconds."""
    tokens = tokens or {True: 1, False: 1}
    kinds = []
    for _ in range(rounds):
        kind = chooser.speculate
        kinds.append("S" if kind else "A")
        chooser.record(kind, cost[kind], tokens[kind])
    return "".join(kinds)


def test_slow_speculation_falls_back_to_ar_and_reprobes_at_doubling_intervals():
    """Speculate (the first round unmeasured: draft catch-up), sample AR once, then AR with probes of two rounds
    after 8, 16, 32, 64, 64 AR steps."""
    kinds = schedule(Fallback(probe=8, max_interval=64), {True: 2.0, False: 1.0}, 200)
    expected = "SS" + "A" + "".join("A" * n + "SS" for n in (8, 16, 32, 64, 64))
    assert kinds == (expected + "A" * 200)[:200]


def test_fast_speculation_stays_speculative_with_rare_ar_probes():
    """Each round emits 3 tokens for 1.5 s (0.5 s a token) against AR's 1 s: one AR probe per 16, 32, 64 rounds."""
    chooser = Fallback(probe=8, max_interval=64)
    kinds = schedule(chooser, {True: 1.5, False: 1.0}, 150, tokens={True: 3, False: 1})
    assert kinds[:3] == "SSA" and kinds.count("A") <= 4
    assert [i for i, k in enumerate(kinds) if k == "A"] == [2, 19, 52, 117]
    assert chooser.best


def test_a_probe_that_wins_switches_back_and_resets_the_interval():
    """AR wins at first; then speculation gets cheaper: the next probe wins and speculation runs on."""
    chooser = Fallback(probe=4, max_interval=64)
    assert schedule(chooser, {True: 2.0, False: 1.0}, 12) == "SSA" + "AAAA" + "SS" + "AAA"
    later = schedule(chooser, {True: 0.5, False: 1.0}, 14)
    assert later == "AAAAA" + "SS" + "SSSS" + "A" + "SS"  # the probe won; AR re-tried after `probe` rounds, lost
    assert chooser.best and chooser.interval == 8


def test_reset_forgets_the_last_generation():
    chooser = Fallback(probe=4)
    schedule(chooser, {True: 2.0, False: 1.0}, 10)
    chooser.reset()
    assert chooser.speculate and chooser.cost == {True: None, False: None}


def test_a_new_generation_starts_with_the_best_kind_and_keeps_the_costs():
    """AR won last time: the next generation starts with AR steps and probes speculation on the same schedule."""
    chooser = Fallback(probe=4, max_interval=64)
    assert schedule(chooser, {True: 2.0, False: 1.0}, 20).startswith("SSA" + "AAAA" + "SS" + "AAAAAAAA" + "SS")
    costs = dict(chooser.cost)
    chooser.begin()
    assert not chooser.speculate and chooser.cost == costs
    assert schedule(chooser, {True: 2.0, False: 1.0}, 20) == "A" * 15 + "SS" + "AAA"  # the interval (16) carries on


def test_draft_free_methods_measure_the_first_round_after_ar_steps():
    kinds = schedule(Fallback(probe=4, max_interval=64, settle=False), {True: 2.0, False: 1.0}, 20)
    assert kinds == "SA" + "AAAA" + "S" + "A" * 8 + "S" + "AAAA"


class Scripted(Fallback):
    """A chooser that decides by a fixed random script (exactness under any interleaving)."""

    def __init__(self, seed: int):
        self.seed = seed
        super().__init__()

    def reset(self) -> None:
        super().reset()
        self.rng = random.Random(self.seed)
        self.speculate = True
        self.decided = []

    def record(self, speculated: bool, seconds: float, tokens: int) -> None:
        self.decided.append(speculated)
        self.speculate = self.rng.random() < 0.5


class Priced(Fallback):
    """The real chooser fed synthetic seconds: a speculative round `spec` s, an AR step `ar` s."""

    def __init__(self, spec: float, ar: float):
        self.prices = {True: spec, False: ar}
        super().__init__()

    def record(self, speculated: bool, seconds: float, tokens: int) -> None:
        super().record(speculated, self.prices[speculated], tokens)


def never_agreeing(pair, avoid: set[int]):
    """A copy of the draft whose logits rank a few tokens outside `avoid` first, whatever the text: every draft
    token (and tree node) is one the target never emits, so nothing is ever accepted."""
    draft = copy.deepcopy(pair.draft)
    vocab = draft.config.vocab_size
    bias = torch.zeros(vocab, dtype=draft.dtype)
    picks = [t for t in range(vocab) if t not in avoid][:4]
    bias[picks] = torch.tensor([40.0, 30.0, 20.0, 10.0], dtype=draft.dtype)
    draft.get_output_embeddings().register_forward_hook(lambda module, args, out: torch.zeros_like(out) + bias)
    return draft


@pytest.mark.parametrize(("method", "params"), OURS, ids=str)
def test_any_interleaving_of_ar_steps_and_rounds_is_exact(pair64, method, params):
    """AR steps between rounds leave every state right: the draft catches up, the table and caches stay exact."""
    decoder = build_decoder(method, pair64.target, pair64.draft, **params)
    for seed, prompt in enumerate(random_prompts(4, seed=31)):
        decoder.chooser = Scripted(seed)
        out = decoder.generate(prompt, 48)
        assert out.tokens == ar_tokens(pair64, prompt, 48), f"prompt {seed}"
        s = out.stats
        assert s.fallback_rounds == decoder.chooser.decided.count(False) > 0
        assert s.target_forwards == s.rounds + 1
        if method != "linear":
            assert len(s.tree_nodes_per_round) == s.rounds


@pytest.mark.parametrize(("method", "params"), [("streaming_linear", {"k": 4}),
                                                ("streaming_tree", {"depth": 4, "branch": 2, "max_nodes": 12})])
def test_interleaving_under_a_sink_cache_matches_streaming_ar(pair64, method, params):
    decoder = build_decoder(method, pair64.target, pair64.draft, cache_size=48, **params)
    ar = build_decoder("streaming_ar", pair64.target, cache_size=48 - decoder.lookahead + 1)
    for seed, prompt in enumerate(random_prompts(3, seed=5, lengths=(1, 50))):
        decoder.chooser = Scripted(seed)
        assert decoder.generate(prompt, 100).tokens == ar.generate(prompt, 100).tokens


@pytest.mark.parametrize(("method", "params"), OURS, ids=str)
def test_fallback_off_never_takes_an_ar_step(pair64, method, params):
    decoder = build_decoder(method, pair64.target, pair64.draft, fallback=False, **params)
    decoder.chooser = Priced(spec=9.0, ar=1.0)
    assert decoder.params()["fallback"] is False
    for prompt in random_prompts(3, seed=8):
        out = decoder.generate(prompt, 40)
        assert out.tokens == ar_tokens(pair64, prompt, 40)
        assert out.stats.fallback_rounds == 0


@pytest.mark.parametrize(("method", "params"), [("linear", {"k": 6}), ("tree", {"depth": 4, "branch": 3})], ids=str)
def test_zero_acceptance_engages_the_fallback(pair64, method, params):
    """A draft that never agrees: after the first rounds and the AR sample, AR steps with sparse probes; AR's tokens."""
    prompt = random_prompts(1, seed=12)[0]
    expected = ar_tokens(pair64, prompt, 80)
    decoder = build_decoder(method, pair64.target, never_agreeing(pair64, set(expected) | set(prompt)), **params)
    assert decoder.params()["fallback"] is True
    decoder.chooser = Priced(spec=3.0, ar=1.0)  # a round that emits one token costs three AR steps
    out = decoder.generate(prompt, 80)
    s = out.stats
    assert out.tokens == expected
    assert s.accepted == 0 and s.drafted > 0
    kinds = "".join("A" if d == 0 else "S" for d in s.drafted_per_round)
    assert kinds.startswith("SSA" + "A" * 8 + "SS" + "A" * 16 + "SS" + "A" * 32 + "SS")
    assert s.fallback_rounds == kinds.count("A") > 0.75 * s.rounds


def test_costs_carry_over_to_the_next_generation_until_reset_state(pair64):
    """The second generation of a text where speculation loses skips the first generation's re-learning."""
    prompt = random_prompts(1, seed=12)[0]
    expected = ar_tokens(pair64, prompt, 48)
    decoder = build_decoder("linear", pair64.target, never_agreeing(pair64, set(expected) | set(prompt)), k=4)
    decoder.chooser = Priced(spec=3.0, ar=1.0)
    first, second = (decoder.generate(prompt, 48) for _ in range(2))
    decoder.reset_state()
    third = decoder.generate(prompt, 48)
    assert first.tokens == second.tokens == third.tokens == expected
    assert second.stats.drafted_per_round[:8] == [0] * 8 and first.stats.drafted_per_round[0] > 0
    assert second.stats.fallback_rounds > first.stats.fallback_rounds == third.stats.fallback_rounds


def test_recycling_falls_back_from_an_empty_table_and_learns_meanwhile(pair64):
    """An empty table (token 0 everywhere) guesses nothing at first; AR steps are taken where rounds cost more, and
    their logits fill the table as verifications do, so later probes can win."""
    prompt = random_prompts(1, seed=12)[0]
    decoder = build_decoder("recycling", pair64.target, depth=4, branch=3, max_nodes=12, keep_table=False)
    decoder.chooser = Priced(spec=3.0, ar=1.0)
    out = decoder.generate(prompt, 80)
    assert out.tokens == ar_tokens(pair64, prompt, 80)
    assert out.stats.fallback_rounds > 0.5 * out.stats.rounds
    pairs = list(zip(out.tokens[:-1], out.tokens[1:], strict=True))
    known = sum(after in decoder.table[token].tolist() for token, after in pairs)  # rows refreshed since: other text
    assert known > 0.5 * len(pairs)


class AlwaysAR(Scripted):
    def record(self, speculated: bool, seconds: float, tokens: int) -> None:
        self.speculate = False


def test_an_ar_step_refreshes_the_recycling_table_row_of_the_token_it_fed(pair64):
    decoder = build_decoder("recycling", pair64.target, depth=2, branch=2, max_nodes=4, keep_table=False)
    decoder.chooser = AlwaysAR(0)
    out = decoder.generate([11, 12, 13], 12)
    assert out.stats.fallback_rounds == out.stats.rounds - 1  # the first round speculates
    last, before = out.tokens[-1], out.tokens[-2]
    assert out.tokens.count(before) == 1 and last in decoder.table[before].tolist()


@pytest.mark.parametrize(("method", "params"), [("linear", {"k": 8}), ("tree", {"depth": 6, "branch": 3})], ids=str)
def test_zero_acceptance_on_the_real_clock_is_mostly_ar(pair64, method, params):
    """Measured times, not synthetic ones: rounds of K draft forwards for one token lose to AR steps."""
    prompt = random_prompts(1, seed=14)[0]
    expected = ar_tokens(pair64, prompt, 96)
    draft = never_agreeing(pair64, set(expected) | set(prompt))
    out = build_decoder(method, pair64.target, draft, **params).generate(prompt, 96)
    assert out.tokens == expected and out.stats.accepted == 0
    assert out.stats.fallback_rounds > out.stats.rounds / 2


def test_bad_fallback_value_is_refused(pair64):
    for method, params in [("linear", {"k": 2}), ("tree", {"depth": 2, "branch": 2}), ("recycling", {})]:
        with pytest.raises(ValueError, match="fallback must be true or false"):
            build_decoder(method, pair64.target, pair64.draft if method != "recycling" else None, fallback="yes",
                          **params)


def test_results_record_the_knob_and_how_often_it_engaged(pair):
    prompts = [Prompt("", p) for p in random_prompts(2, seed=4)]
    run = run_method(pair, "linear", {"k": 3}, prompts, Protocol(max_new_tokens=24, warmup=0, repeats=1))
    assert run["params"]["fallback"] is True
    share = sum(s["fallback_rounds"] for s in run["samples"]) / sum(s["rounds"] for s in run["samples"])
    assert summarize(run)["fallback_share"] == pytest.approx(share)
    off = run_method(pair, "linear", {"k": 3, "fallback": False}, prompts, Protocol(max_new_tokens=24, warmup=0,
                                                                                   repeats=1))
    assert off["params"]["fallback"] is False and summarize(off)["fallback_share"] == 0
