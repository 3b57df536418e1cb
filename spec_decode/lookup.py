"""Prompt lookup and retrieval: continue the text the way it went after earlier occurrences of its suffix."""

from __future__ import annotations

import torch


def retrieve_continuations(context: torch.Tensor, max_ngram: int, length: int,
                           branches: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `branches` continuations of the context, each the `length` tokens that followed an earlier occurrence
    of its suffix: the longest matches first (n <= max_ngram), the most recent first among equally long ones.

    Returns `(branches, length)` tokens (padded) and how many of each row are real (0: no match); no host sync.
    (A suffix automaton finds unbounded matches; bounded n keeps this a few vectorised comparisons per round.)
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
    if top is None:
        return tokens, counts
    found = top.values >= 0
    starts = top.indices + 1
    index = (starts[:, None] + torch.arange(length, device=device)).clamp(max=size - 1)
    k = found.numel()
    tokens[:k] = context[index]
    counts[:k] = torch.where(found, (size - starts).clamp(max=length), 0)
    return tokens, counts
