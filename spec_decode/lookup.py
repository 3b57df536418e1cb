"""Prompt lookup: continue the text the way it went after the latest earlier occurrence of its last n-gram."""

from __future__ import annotations

import torch


def ngram_continuation(context: torch.Tensor, max_ngram: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The up to `length` tokens that followed the most recent earlier match of the context's last n tokens.

    The longest n <= max_ngram with a match wins. Returns `length` tokens (padded) and how many of them are
    real (a 0-d tensor, 0 when nothing matches); no host sync.
    """
    size = context.numel()
    start = torch.full((), -1, dtype=torch.long, device=context.device)
    for n in range(1, min(max_ngram, size - 1) + 1):
        windows = context[: size - 1].unfold(0, n, 1)  # every n-gram that has a following token
        hits = (windows == context[size - n :]).all(-1)
        latest = torch.where(hits, torch.arange(hits.numel(), device=context.device), -1).max()
        start = torch.where(latest >= 0, latest + n, start)
    count = torch.where(start >= 0, (size - start).clamp(max=length), 0)
    index = (start.clamp(min=0) + torch.arange(length, device=context.device)).clamp(max=size - 1)
    return context[index], count
