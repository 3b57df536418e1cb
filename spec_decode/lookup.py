"""Prompt lookup and retrieval: continue the text the way it went after earlier occurrences of its suffix."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from spec_decode.costmodel import OnlineCost


class Continuations(NamedTuple):
    """Retrieved continuations: `(branches, length)` tokens (padded), how many of each row are real (0: no match),
    and the length of the suffix match each row continues."""

    tokens: torch.Tensor
    counts: torch.Tensor
    matched: torch.Tensor


def retrieve_continuations(context: torch.Tensor, max_ngram: int, length: int, branches: int) -> Continuations:
    """Up to `branches` continuations of the context, each the `length` tokens that followed an earlier occurrence
    of its suffix: the longest matches first (n <= max_ngram), the most recent first among equally long ones; no
    host sync. (A suffix automaton finds unbounded matches; bounded n keeps this a few vectorised comparisons.)
    """
    size, device = context.numel(), context.device
    ends = torch.arange(size - 1, device=device)  # an occurrence ending here has a following token
    matched = torch.zeros(size - 1, dtype=torch.long, device=device)
    for n in range(1, min(max_ngram, size - 1) + 1):
        hits = (context[: size - 1].unfold(0, n, 1) == context[size - n :]).all(-1)  # window j ends at j + n - 1
        matched[n - 1 :] = torch.where(hits, n, matched[n - 1 :])
    score = torch.where(matched > 0, matched * size + ends, -1)
    top = score.topk(min(branches, size - 1)) if size > 1 else None
    tokens = torch.zeros(branches, length, dtype=torch.long, device=device)
    counts = torch.zeros(branches, dtype=torch.long, device=device)
    matched_rows = torch.zeros(branches, dtype=torch.long, device=device)
    if top is None:
        return Continuations(tokens, counts, matched_rows)
    found = top.values >= 0
    starts = top.indices + 1
    index = (starts[:, None] + torch.arange(length, device=device)).clamp(max=size - 1)
    k = found.numel()
    tokens[:k] = context[index]
    counts[:k] = torch.where(found, (size - starts).clamp(max=length), 0)
    matched_rows[:k] = matched[top.indices].clamp(min=0)
    return Continuations(tokens, counts, matched_rows)


class LengthByMatch:
    """How many tokens of the retrieved continuations to verify, chosen each round from the length of the suffix match
    that found them (a longer match is likelier to go on as before: SAM-decoding's observation).

    Per match length n: p[n][j], the chance that the target accepts a continuation's j-th token once it accepted the
    first j - 1, as decayed counts (prior 1 of 2) over the rounds that verified j tokens or more. Per round: seconds =
    base + per_node * nodes, an `OnlineCost` fit over recent rounds (AR steps included). The chosen length m maximises
    expected tokens (1 + sum_j prod_{i<=j} p[n][i]) over seconds (base + per_node * m * rows); m = 0 is a plain AR
    step. A match length whose best m is 0 is verified at its best positive m every `probe`-th time, so a changed
    text is noticed. Until the cost fit has seen both kinds of round, every round verifies the full length.
    Host-side Python on scalars; the statistics carry over between generations (`reset` forgets them).
    """

    def __init__(self, ngram: int, lookup: int, decay: float = 0.98, forget: float = 0.97, probe: int = 16):
        self.ngram, self.lookup, self.decay, self.forget, self.probe = ngram, lookup, decay, forget, probe
        self.reset()

    def reset(self) -> None:
        self.passed = np.zeros((self.ngram + 1, self.lookup + 1))  # decayed counts, the prior (1 of 2) not included
        self.tried = np.zeros((self.ngram + 1, self.lookup + 1))
        self.skipped = np.zeros(self.ngram + 1, dtype=int)
        # an answer once node counts varied (variance >= 0.5) enough to tell the base from the per-node cost
        self.cost = OnlineCost(features=1, forget=self.forget, min_rounds=1, min_spread=0.5 ** 0.5)

    def costs(self) -> np.ndarray | None:
        """(base, per node) seconds, each >= 0; None until rounds with and without nodes have both been seen."""
        return self.cost.coefficients()

    def expected_tokens(self, matched: int) -> np.ndarray:
        """Expected emitted tokens when verifying m = 0..lookup tokens of a continuation found by a `matched` match."""
        survival = np.cumprod((1 + self.passed[matched, 1:]) / (2 + self.tried[matched, 1:]))
        return 1.0 + np.concatenate([[0.0], np.cumsum(survival)])

    def choose(self, matched: int, rows: int, limit: int) -> int:
        """Tokens to verify (0: an AR step) of `rows` continuations found by a `matched`-token suffix match."""
        costs = self.costs()
        if costs is None or rows == 0:
            return limit if rows else 0
        m = np.arange(limit + 1)
        rate = self.expected_tokens(matched)[: limit + 1] / (costs[0] + costs[1] * m * rows)
        best = int(np.argmax(rate))
        if best == 0:
            self.skipped[matched] += 1
            if self.skipped[matched] >= self.probe:
                self.skipped[matched] = 0
                return int(np.argmax(rate[1:])) + 1
        return best

    def observe(self, matched: int, verified: int, accepted: int, nodes: int, seconds: float) -> None:
        """One round: its match length and verified continuation length (0: an AR step), tokens accepted, tree
        nodes (root excluded) and wall seconds."""
        self.cost.observe(nodes, seconds=seconds, tokens=accepted + 1)
        if verified == 0:
            return
        reached = min(accepted + 1, verified)  # positions 1..reached were tried; 1..accepted passed
        self.passed[matched] *= self.decay
        self.tried[matched] *= self.decay
        self.tried[matched, 1 : reached + 1] += 1
        self.passed[matched, 1 : accepted + 1] += 1
