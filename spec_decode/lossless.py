"""The statistical check that sampled decoding is lossless: a decoder's first tokens against their exact law.

The exact joint distribution of the first `length` tokens is enumerated from the target (float64, batched
forwards over every prefix above a probability floor; the mass below it is kept as one "rest" cell), a decoder
draws N sequences from fixed seeds, and a G-test compares the counts with the exact distribution. Testing against
the exact law (rather than AR samples against the method's samples) has no second sampling noise, so it is the
stronger test, and it checks AR's own sampler too.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
from transformers import PreTrainedModel

from spec_decode.decoders import build_decoder
from spec_decode.kv import additive_mask
from spec_decode.models import ModelPair, tiny_pair
from spec_decode.sampling import Sampling

# 11 random bytes, then the tiny target's greedy continuation of them: retrieval and lookup find earlier matches
PROMPT = [254, 79, 175, 192, 82, 99, 216, 177, 243, 29, 147, 81, 106, 77, 178, 207, 195, 169, 97, 108, 62, 185, 219]
LENGTH = 3  # the tested tokens: the first three of each generation
MIN_EXPECTED = 5.0  # cells expected fewer times than this are merged into "other"
MIN_CELL_P = 0.007  # and cells less likely than this: more draws then sharpen the same cells, not add rare ones
ALPHA = 1e-3  # the p-value below which a decoder fails
SHIFT = 0.02  # the total-variation shift whose detection power is reported


@dataclass(frozen=True)
class Case:
    """A method under test: its knobs and how many new tokens each generation makes (enough for one full round
    after the prefill's token, so every draft position is exercised; the first LENGTH are tested)."""

    method: str
    knobs: dict = field(default_factory=dict)
    budget: int = LENGTH

    def label(self) -> str:
        knobs = " ".join(f"{key}={value}" for key, value in self.knobs.items() if key != "fallback")
        return f"{self.method} {knobs}".strip()


NO_FALLBACK = {"fallback": False}  # every round speculates (and the tokens do not depend on timings)
STREAM = {"sink": 2, **NO_FALLBACK}  # with each cache_size below: a window of 6 positions, shorter than the prompt
CASES = {
    "ar": Case("ar"),
    "linear_k4": Case("linear", {"k": 4, **NO_FALLBACK}, budget=6),
    "linear_k1": Case("linear", {"k": 1, **NO_FALLBACK}),
    "tree": Case("tree", {"depth": 3, "branch": 2, **NO_FALLBACK}, budget=5),
    "tree_lookup_recycle": Case("tree", {"depth": 3, "branch": 2, "lookup": 4, "lookup_branches": 2, "ngram": 2,
                                         "recycle": 4, **NO_FALLBACK}, budget=5),
    "tree_budget_split": Case("tree", {"depth": 3, "branch": 2, "lookup": 4, "ngram": 2, "recycle": 4,
                                       "budget_split": True, **NO_FALLBACK}, budget=5),
    "recycling": Case("recycling", {"depth": 3, "branch": 4, "max_nodes": 12, **NO_FALLBACK}, budget=5),
    "retrieval": Case("retrieval", {"lookup": 4, "branches": 2, "ngram": 2, **NO_FALLBACK}, budget=5),
    "eagle": Case("eagle", {"k": 3, **NO_FALLBACK}, budget=5),
    "streaming_linear": Case("streaming_linear", {"k": 2, "cache_size": 10, **STREAM}, budget=4),
    "streaming_tree": Case("streaming_tree", {"depth": 2, "branch": 2, "max_nodes": 4, "cache_size": 12, **STREAM},
                           budget=4),
    "hf_assisted": Case("hf_assisted"),
    "hf_lookup": Case("hf_lookup", {"prompt_lookup_num_tokens": 4}),
}
SAMPLINGS = {  # peaked enough (tens of cells, not thousands) for the test to have power on the tiny pair
    "T=0.5": Sampling(temperature=0.5),
    "T=0.6 top_k=8 top_p=0.9": Sampling(temperature=0.6, top_p=0.9, top_k=8),
}


@dataclass(frozen=True)
class Exact:
    """The exact law of the first tokens: each sequence above the floor with its probability, and the rest's mass."""

    cells: dict[tuple[int, ...], float]
    rest: float


@dataclass(frozen=True)
class TestResult:
    """A G-test of counts against an exact law (df + 1 cells after merging), with its power against SHIFT moved
    between the two likeliest cells and against the least detectable SHIFT in total variation, and the shifts of
    each kind it detects with power 0.8."""

    statistic: float
    df: int
    p_value: float
    draws: int
    power_shift: float
    power_worst: float
    detectable_shift: float
    detectable_worst: float

    @property
    def passed(self) -> bool:
        return self.p_value >= ALPHA


def exact_distribution(model: PreTrainedModel, prompt: list[int], sampling: Sampling, length: int = 3,
                       floor: float = 1e-6, sink: int | None = None, window: int | None = None) -> Exact:
    """Enumerate the first `length` tokens' joint law level by level, pruning prefixes at or below `floor`.

    `sink` / `window`: the StreamingLLM attention of the streaming decoders (each query sees positions < sink and
    > its own - window). A pruned prefix's extensions are all at or below the floor too, so `rest` is exact.
    """
    prefixes = torch.empty(1, 0, dtype=torch.long)
    mass = torch.ones(1, dtype=torch.float64)
    rest = 0.0
    for _ in range(length):
        probs = next_token_probs(model, prompt, prefixes, sampling, sink, window) * mass[:, None]
        keep = probs > floor
        rest += float(probs[~keep].sum())
        rows, tokens = keep.nonzero(as_tuple=True)
        prefixes = torch.cat([prefixes[rows], tokens[:, None]], dim=1)
        mass = probs[rows, tokens]
    return Exact(dict(zip(map(tuple, prefixes.tolist()), mass.tolist(), strict=True)), rest)


@torch.inference_mode()
def next_token_probs(model: PreTrainedModel, prompt: list[int], prefixes: torch.Tensor, sampling: Sampling,
                     sink: int | None = None, window: int | None = None, batch: int = 512) -> torch.Tensor:
    """The processed next-token distribution after prompt + each row of `prefixes`, float64, `(rows, vocab)`."""
    head = torch.as_tensor(prompt, dtype=torch.long).expand(prefixes.shape[0], -1)
    ids = torch.cat([head, prefixes], dim=1).to(model.device)
    mask = None if window is None else streaming_mask(ids.shape[1], sink, window, model.dtype).to(model.device)
    out = []
    for chunk in ids.split(batch):
        chunk_mask = None if mask is None else mask.expand(chunk.shape[0], -1, -1, -1)
        logits = model(input_ids=chunk, attention_mask=chunk_mask, logits_to_keep=1).logits[:, -1]
        out.append(sampling.probs(logits.double()))
    return torch.cat(out).cpu()


def streaming_mask(tokens: int, sink: int, window: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive `(1, 1, tokens, tokens)` mask: causal, and each query sees positions < sink and > its own - window."""
    query = torch.arange(tokens)[:, None]
    key = torch.arange(tokens)[None, :]
    return additive_mask((key <= query) & ((key < sink) | (key > query - window)), dtype)


def sample_counts(decoder, prompt: list[int], length: int, draws: int, seed: int = 0,
                  budget: int | None = None) -> Counter:
    """Counts of the first `length` tokens over `draws` generations of `budget` (default `length`) new tokens,
    seeded seed, seed + 1, ..."""
    budget = budget or length
    return Counter(tuple(decoder.generate(prompt, budget, seed=s).tokens[:length]) for s in range(seed, seed + draws))


def partition(exact: Exact, draws: int) -> list[tuple[int, ...]]:
    """The sequences kept as their own cells (expected >= MIN_EXPECTED times in `draws`, probability >= MIN_CELL_P),
    likeliest first."""
    least = max(MIN_EXPECTED / draws, MIN_CELL_P)
    kept = [cell for cell, p in exact.cells.items() if p >= least]
    return sorted(kept, key=exact.cells.get, reverse=True)


def g_test(counts: Counter, exact: Exact, draws: int) -> TestResult:
    """G-test of `counts` against `exact`; the cells expected fewer than MIN_EXPECTED times (and the rest) are
    pooled into one "other" cell, itself folded into the least likely cell when it is still too small."""
    kept = partition(exact, draws)
    observed = [counts.get(cell, 0) for cell in kept]
    expected = [exact.cells[cell] * draws for cell in kept]
    other_observed, other_expected = draws - sum(observed), draws - sum(expected)
    if other_expected >= MIN_EXPECTED or (other_expected <= 1e-9 and other_observed > 0):
        observed, expected = observed + [other_observed], expected + [max(other_expected, 0.0)]
    elif kept:
        observed[-1] += other_observed
        expected[-1] += max(other_expected, 0.0)
    o, e = torch.tensor(observed, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64)
    statistic = float(2 * (torch.xlogy(o, o) - torch.xlogy(o, e)).sum())
    df = len(observed) - 1
    shift, worst = partial(shift_noncentrality, exact, draws), partial(worst_noncentrality, draws)
    return TestResult(statistic, df, chi2_sf(statistic, df), draws, power(df, shift()), power(df, worst()),
                      detectable_shift(df, shift), detectable_shift(df, worst))


def chi2_sf(x: float, df: int) -> float:
    """P(chi-square with `df` degrees of freedom > x)."""
    if df < 1 or math.isinf(x):
        return float(x <= 0) if df < 1 else 0.0
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),
                                         torch.tensor(max(x, 0.0) / 2, dtype=torch.float64)))


def chi2_isf(alpha: float, df: int) -> float:
    """The critical value c with P(chi-square_df > c) = alpha (bisection on the survival function)."""
    low, high = 0.0, df + 100.0 * math.sqrt(df) + 100.0
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if chi2_sf(mid, df) > alpha else (low, mid)
    return (low + high) / 2


def noncentral_chi2_sf(x: float, df: int, noncentrality: float) -> float:
    """P(noncentral chi-square(df, noncentrality) > x): the Poisson(noncentrality / 2) mixture of central ones."""
    half = noncentrality / 2
    terms = int(half + 12 * math.sqrt(half) + 60)
    j = torch.arange(terms, dtype=torch.float64)
    weights = torch.exp(-half + j * math.log(half) - torch.lgamma(j + 1)) if half > 0 else (j == 0).double()
    tails = torch.special.gammaincc(df / 2 + j, torch.full_like(j, x / 2))
    return float((weights * tails).sum())


def power(df: int, noncentrality: float, alpha: float = ALPHA) -> float:
    """The test's probability of rejecting at level `alpha` under an alternative of this noncentrality."""
    return noncentral_chi2_sf(chi2_isf(alpha, df), df, noncentrality)


def shift_noncentrality(exact: Exact, draws: int, delta: float = SHIFT) -> float:
    """Noncentrality N * sum (p1 - p0)^2 / p0 of moving `delta` of mass from the likeliest cell to the second."""
    top = partition(exact, draws)[:2]
    return draws * delta**2 * sum(1 / exact.cells[cell] for cell in top)


def worst_noncentrality(draws: int, delta: float = SHIFT) -> float:
    """The least noncentrality of any alternative `delta` away in total variation over the test's cells: 4 delta^2 N
    (Cauchy-Schwarz: sum |p1 - p0| = 2 delta gives sum (p1 - p0)^2 / p0 >= 4 delta^2)."""
    return 4 * delta**2 * draws


def detectable_shift(df: int, noncentrality: Callable[[float], float], goal: float = 0.8) -> float:
    """The least shift delta the test detects with probability `goal`, for `noncentrality(delta)` increasing."""
    low, high = 0.0, 1.0
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (low, mid) if power(df, noncentrality(mid)) >= goal else (mid, high)
    return high


def check(decoder, prompt: list[int], sampling: Sampling, draws: int, seed: int = 0, budget: int = LENGTH,
          length: int = LENGTH) -> TestResult:
    """Sample `decoder` under `sampling` and G-test its first `length` tokens against the target's exact law
    (streaming decoders: the law under their sink and window)."""
    decoder.sampling = sampling
    window = getattr(decoder, "window", None)
    sink = getattr(decoder, "sink", None)
    floor = MIN_EXPECTED / draws / 10  # below any kept cell's probability: the pruning changes no cell
    exact = exact_distribution(decoder.target, prompt, sampling, length, floor, sink, window)
    return g_test(sample_counts(decoder, prompt, length, draws, seed, budget), exact, draws)


def check_case(case: Case, pair: ModelPair, sampling: Sampling, draws: int, seed: int = 0,
               prompt: list[int] = PROMPT) -> TestResult:
    """`check` of one case's decoder on `pair`."""
    decoder = build_decoder(case.method, pair.target, pair.draft_for(case.method), **case.knobs)
    return check(decoder, prompt, sampling, draws, seed, case.budget)


def tiny_pair64() -> ModelPair:
    """The pair the check runs on: a tiny float64 GPT-NeoX pair whose p and q differ a lot at PROMPT (TV ~0.75)."""
    return tiny_pair("gpt_neox", seed=1, dtype=torch.float64)
