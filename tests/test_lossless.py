"""Issue 15's proof that sampling is lossless (spec_decode/lossless.py), and that the proof catches wrong rules.

Every method's first three tokens, from DRAWS fixed seeds (0..DRAWS-1, so the test is deterministic) on the tiny
float64 pair, are G-tested against their exact law enumerated from the target; p < 0.001 fails. Against the exact
law, not against AR's samples: one sampling noise instead of two, and AR's own sampler is checked too.

Power at DRAWS = 700 and alpha = 0.001 (20 / 22 cells at T=0.5 / T=0.6 top_k=8 top_p=0.9; the two likeliest
sequences have p = 0.30, 0.06 / 0.29, 0.07):
- 2% of mass moved between the two likeliest cells (noncentrality N d^2 (1/p1 + 1/p2) = 5.8 / 4.8): power 0.018 /
  0.011; the shift detected with power 0.8 is 5.0% / 5.6%.
- the worst 2% total-variation shift over the test's cells (least noncentrality 4 d^2 N = 1.12): power 0.002 (about
  alpha: no power); the worst-case shift detected with power 0.8 is 11-12%.
So at DRAWS every method is checked for gross errors (a wrong acceptance or residual rule moves far more: p(x) and
q(x) differ by TV ~0.75 at the prompt; the planted bugs below reach p < 1e-6 at 500 draws), and the samplers with
randomness of their own (AR, which every tree method's draws equal, and Linear) are also run at POWERED_DRAWS,
where 2% moved between the two likeliest sequences is caught with power >= 0.8 (asserted). No affordable N reaches
the worst-case 2% shift (power 0.8 there needs N ~ 25,000-30,000 per method).
`accept_drafts` itself is checked exactly (no sampling) by integrating over a grid of its uniforms.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from collections import Counter

import pytest
import torch

from spec_decode import lossless
from spec_decode.decoders import build_decoder, linear
from spec_decode.decoders.base import Fallback
from spec_decode.lossless import (
    ALPHA,
    CASES,
    PROMPT,
    SAMPLINGS,
    Exact,
    chi2_isf,
    chi2_sf,
    exact_distribution,
    g_test,
    next_token_probs,
    noncentral_chi2_sf,
    power,
    worst_noncentrality,
)
from spec_decode.sampling import Sampling, accept_drafts, draw
from tests.conftest import ROOT

DRAWS = 700
BUG_DRAWS = 500
TESTED = ["ar", "linear_k4", "linear_k1", "tree", "tree_lookup_recycle", "recycling", "retrieval", "streaming_linear",
          "eagle"]


@pytest.fixture(scope="module")
def pair():
    return lossless.tiny_pair64()


@pytest.mark.parametrize("sampling", SAMPLINGS)
@pytest.mark.parametrize("case", TESTED)
def test_first_tokens_follow_the_exact_law(pair, case, sampling):
    """Each case draws from its own seeds: the tree methods emit AR's tokens from a seed, so shared seeds would
    repeat AR's counts instead of adding evidence."""
    result = lossless.check_case(CASES[case], pair, SAMPLINGS[sampling], DRAWS, seed=100_000 * TESTED.index(case))
    assert result.df >= 5  # a law of several likely sequences (not thousands of rare ones): the test has power
    assert result.passed, result


POWERED_DRAWS = 5_000


@pytest.mark.parametrize("case", ["ar", "linear_k4", "linear_k1"])
def test_a_two_percent_shift_would_be_caught(pair, case):
    """The samplers with randomness of their own (AR, whose draws every tree method shares, and Linear's
    speculative sampling) at POWERED_DRAWS: the test then detects 2% of mass moved between the two likeliest
    sequences with power >= 0.8 (T=0.5: the same 20 cells at any N, noncentrality 0.0083 per draw, ~41 at 5,000),
    and the draws pass. The worst-case 2% shift (spread in proportion to p) stays out of reach (power 0.8 needs
    ~25,000 draws)."""
    result = lossless.check_case(CASES[case], pair, SAMPLINGS["T=0.5"], POWERED_DRAWS, seed=7_000_000)
    assert result.power_shift >= 0.8, result
    assert result.passed, result


def accept_always(p, q, drafts, uniforms):
    """Wrong: keep every draft (the draft's law leaks through), then draw the next token from p."""
    k = drafts.numel()
    return torch.tensor(k), draw(p[k], uniforms[k])


def accept_if_likelier(p, q, drafts, uniforms):
    """Wrong: keep a draft exactly when p(x) > q(x) (uniform 1), instead of with probability min(1, p/q)."""
    k = drafts.numel()
    return accept_drafts(p, q, drafts, torch.cat([torch.ones(k, dtype=uniforms.dtype), uniforms[k:]]))


def correction_from_p(p, q, drafts, uniforms):
    """Wrong: after a rejection, draw from p instead of the residual max(0, p - q)."""
    accepted, _ = accept_drafts(p, q, drafts, uniforms)
    return accepted, draw(p[accepted], uniforms[drafts.numel()])


BUGS = [accept_always, accept_if_likelier, correction_from_p]


class Alternating(Fallback):
    """A fallback that runs AR steps and speculative rounds in turn, whatever they cost (deterministic)."""

    def record(self, speculated: bool, seconds: float, tokens: int) -> None:
        self.speculate = not speculated


def test_linear_mixed_with_fallback_ar_steps_at_temperature_one_follows_the_exact_law(pair):
    """The AR fallback's steps (one uniform per position) between speculative rounds (their own draws), at
    temperature 1 (no temperature warper; top_k=8 keeps the law to tens of cells)."""
    decoder = build_decoder("linear", pair.target, pair.draft, k=1, fallback=True)
    decoder.chooser = Alternating(settle=False)
    sampling = Sampling(temperature=1.0, top_k=8)
    result = lossless.check(decoder, PROMPT, sampling, DRAWS, seed=9_000_000, budget=4)
    assert result.df >= 5 and result.passed, result
    assert decoder.generate(PROMPT, 8, seed=1).stats.fallback_rounds > 0


@pytest.mark.parametrize("bug", BUGS, ids=lambda bug: bug.__name__)
def test_planted_bug_fails_the_statistical_test(pair, monkeypatch, bug):
    monkeypatch.setattr(linear, "accept_drafts", bug)
    result = lossless.check_case(CASES["linear_k4"], pair, SAMPLINGS["T=0.6 top_k=8 top_p=0.9"], BUG_DRAWS)
    assert result.p_value < ALPHA, result


# Hand-made p (3 rows) and q (2 rows) over 4 tokens, in 16ths: every acceptance ratio p/q below 1 and every
# (residual's) CDF breakpoint is a multiple of 1/16, so the midpoint rule on 16 points per uniform is exact.
P = torch.tensor([[6, 4, 4, 2], [4, 4, 6, 2], [1, 3, 5, 7]], dtype=torch.float64) / 16
Q = torch.tensor([[4, 8, 2, 2], [8, 2, 4, 2]], dtype=torch.float64) / 16
GRID = (torch.arange(16, dtype=torch.float64) + 0.5) / 16


def emitted_law(rule, k: int) -> torch.Tensor:
    """Exact law of the round's first two emitted tokens under `rule`, drafts drawn from Q's rows and every uniform
    on the grid (one vmapped call): `(4, 5)`, column 4 where the round emitted one token only (no draft accepted)."""
    drafts = torch.tensor(list(itertools.product(range(4), repeat=k)))
    uniforms = torch.tensor(list(itertools.product(GRID.tolist(), repeat=k + 1)), dtype=torch.float64)
    drafts, uniforms = drafts.repeat_interleave(len(uniforms), 0), uniforms.repeat(len(drafts), 1)
    accepted, token = torch.vmap(rule, in_dims=(None, None, 0, 0))(P[: k + 1], Q[:k], drafts, uniforms)
    weight = Q[torch.arange(k), drafts].prod(1) / len(GRID) ** (k + 1)
    first = torch.where(accepted >= 1, drafts[:, 0], token)
    second = torch.where(accepted >= 2, drafts[:, -1], token).masked_fill_(accepted == 0, 4)
    return torch.zeros(4, 5, dtype=torch.float64).index_put_((first, second), weight, accumulate=True)


def follows_the_target(law: torch.Tensor) -> bool:
    """The first token follows P[0] and, after each accepted draft, the next token follows P[1] (exactly)."""
    after = law[:, :4]
    accepted = after.sum(1) > 0
    return torch.equal(law.sum(1), P[0]) and torch.equal(after[accepted] / after[accepted].sum(1, keepdim=True),
                                                         P[1].expand(int(accepted.sum()), -1))


@pytest.mark.parametrize("k", [1, 2])
def test_accept_drafts_emits_the_target_law_exactly(k):
    law = emitted_law(accept_drafts, k)
    assert law.sum() == 1
    assert torch.equal(law[:, :4].sum(1), torch.minimum(P[0], Q[0]))  # draft x kept with probability min(1, p/q)
    assert follows_the_target(law)


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("bug", BUGS, ids=lambda bug: bug.__name__)
def test_planted_bug_fails_the_exact_check(bug, k):
    assert not follows_the_target(emitted_law(bug, k))


@pytest.mark.parametrize(("sampling", "cells", "shift", "detectable"), [("T=0.5", 20, 0.018, 0.050),
                                                                        ("T=0.6 top_k=8 top_p=0.9", 22, 0.011, 0.056)])
def test_the_stated_power(pair, sampling, cells, shift, detectable):
    """The numbers in this module's docstring, from the exact law (its expected counts: no sampling)."""
    exact = exact_distribution(pair.target, PROMPT, SAMPLINGS[sampling], floor=1e-4)
    result = g_test(Counter({cell: p * DRAWS for cell, p in exact.cells.items()}), exact, DRAWS)
    assert result.df + 1 == cells and result.p_value > 0.99
    assert result.power_shift == pytest.approx(shift, abs=5e-4)
    assert result.detectable_shift == pytest.approx(detectable, abs=5e-4)
    assert result.power_worst == pytest.approx(0.002, abs=5e-4) and 0.11 < result.detectable_worst < 0.12


def test_chi_square_tails_match_closed_forms():
    assert chi2_sf(3.841458820694124, 1) == pytest.approx(0.05, rel=1e-9)
    assert chi2_sf(18.307038053275146, 10) == pytest.approx(0.05, rel=1e-9)
    assert chi2_isf(0.001, 10) == pytest.approx(29.58829844507442, rel=1e-9)
    assert noncentral_chi2_sf(7.0, 4, 0.0) == pytest.approx(chi2_sf(7.0, 4), rel=1e-12)
    for c, nc in [(3.84, 2.0), (10.83, 9.0), (1.0, 0.5)]:  # df 1: (Z + sqrt(nc))^2 > c
        closed = torch.special.ndtr(torch.tensor(-math.sqrt(c) - math.sqrt(nc), dtype=torch.float64)) + \
            torch.special.ndtr(torch.tensor(math.sqrt(nc) - math.sqrt(c), dtype=torch.float64))
        assert noncentral_chi2_sf(c, 1, nc) == pytest.approx(float(closed), rel=1e-9)
    assert power(20, 0.0) == pytest.approx(ALPHA, rel=1e-6)
    assert worst_noncentrality(1000, 0.02) == pytest.approx(1.6)


def test_exact_law_sums_to_one_and_starts_with_the_target_distribution(pair):
    sampling = SAMPLINGS["T=0.5"]
    exact = exact_distribution(pair.target, PROMPT, sampling, length=2, floor=1e-5)
    assert sum(exact.cells.values()) + exact.rest == pytest.approx(1.0, abs=1e-12)
    first = next_token_probs(pair.target, PROMPT, torch.empty(1, 0, dtype=torch.long), sampling)[0]
    marginal = torch.zeros_like(first)
    for (token, _), mass in exact.cells.items():
        marginal[token] += mass
    assert torch.all(marginal <= first + 1e-12) and float(first.sum() - marginal.sum()) <= exact.rest + 1e-12


def test_streaming_law_equals_the_full_one_while_the_window_covers_the_text(pair):
    sampling = Sampling(temperature=0.6, top_k=8)
    full = exact_distribution(pair.target, PROMPT, sampling, length=2, floor=1e-4)
    wide = exact_distribution(pair.target, PROMPT, sampling, length=2, floor=1e-4, sink=2, window=len(PROMPT) + 2)
    narrow = exact_distribution(pair.target, PROMPT, sampling, length=2, floor=1e-4, sink=2, window=6)
    assert wide.cells.keys() == full.cells.keys()
    assert all(wide.cells[c] == pytest.approx(full.cells[c], rel=1e-9) for c in full.cells)
    assert narrow.cells != pytest.approx(full.cells)


def test_g_test_accepts_the_expected_counts_and_rejects_a_shift():
    exact = Exact({(0,): 0.5, (1,): 0.3, (2,): 0.15, (3,): 0.04}, rest=0.01)
    expected = Counter({(0,): 500, (1,): 300, (2,): 150, (3,): 40, (9,): 10})
    calm = g_test(expected, exact, 1000)
    assert calm.statistic == pytest.approx(0.0, abs=1e-9) and calm.p_value == pytest.approx(1.0) and calm.df == 4
    shifted = g_test(Counter({(0,): 560, (1,): 240, (2,): 150, (3,): 40, (9,): 10}), exact, 1000)
    assert shifted.p_value < ALPHA
    impossible = g_test(expected, Exact(exact.cells | {(3,): 0.05}, rest=0.0), 1000)
    assert impossible.p_value == 0.0  # draws outside a law with no mass left over


@pytest.mark.parametrize("argv", [["--draws", "abc"], ["--draws", "10"], ["--seed", "-1"], ["--nope"]])
def test_check_lossless_bad_arguments_are_one_line_and_exit_2(argv):
    proc = subprocess.run([sys.executable, "scripts/check_lossless.py", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "error:" in proc.stderr
