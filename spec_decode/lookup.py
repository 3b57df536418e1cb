"""Prompt lookup: continue the text the way it went after the latest earlier occurrence of its last n-gram."""

from __future__ import annotations

import torch


def ngram_continuation(context: torch.Tensor, max_ngram: int, length: int) -> torch.Tensor:
    """Up to `length` tokens that followed the most recent earlier match of the context's last n tokens.

    Tries n = max_ngram down to 1; returns an empty tensor when nothing matches.
    """
    size = context.numel()
    for n in range(min(max_ngram, size - 1), 0, -1):
        windows = context[: size - 1].unfold(0, n, 1)  # every n-gram that has a following token
        hits = (windows == context[size - n :]).all(-1).nonzero()
        if hits.numel():
            start = int(hits[-1]) + n
            return context[start : start + length]
    return context[:0]
