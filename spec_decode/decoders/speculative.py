"""What linear and tree speculation share: a draft model whose KV cache follows the committed text."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from spec_decode import kv
from spec_decode.decoders.base import Decoder, GenerationStats, finite


class SpeculativeDecoder(Decoder):
    """A decoder with a draft model that keeps its own cache across rounds (never re-prefilled)."""

    drafts = True

    def __init__(self, target: PreTrainedModel, draft: PreTrainedModel, cache_size: int | None = None,
                 sink: int = 4):
        super().__init__(target, cache_size, sink)
        if draft.device != target.device:
            raise ValueError(f"draft on {draft.device} but target on {target.device}")
        self.draft = draft

    def _begin(self, prompt: torch.Tensor, max_new_tokens: int) -> None:
        super()._begin(prompt, max_new_tokens)
        self.draft_cache = self._new_cache(self.draft)

    def _evict(self) -> None:
        """Both caches drop what no later query can see (the draft's next query may lag the target's)."""
        super()._evict()
        if self.cache_size is not None:
            self.draft_cache.evict_before(kv.next_position(self.draft_cache))

    def _draft_catch_up(self, stats: GenerationStats) -> torch.Tensor:
        """Feed the draft the committed tokens its cache lacks; return its logits after the last one.

        Starts the round's draft-finite flag (`draft_ok`, read with the round's accepted count).
        """
        start = kv.next_position(self.draft_cache)
        logits = self._feed_chunked(self.draft, self.draft_cache, self.committed[start : self.length], start)
        stats.draft_forwards += 1
        self.draft_ok = finite(logits)
        return logits

    def _draft_feed(self, ids: torch.Tensor, start: int, stats: GenerationStats, positions: torch.Tensor | None = None,
                    block: torch.Tensor | None = None, features: torch.Tensor | None = None) -> torch.Tensor:
        """One draft forward within a round (`features`: a feature draft's input states); its logits join the
        round's draft-finite flag."""
        logits = self._feed(self.draft, self.draft_cache, ids, start, positions, block, features=features)
        stats.draft_forwards += 1
        self.draft_ok = self.draft_ok & finite(logits)
        return logits


class Peek:
    """Small integer rows read on the host only once they are there: never blocks on the device.

    `post` copies a row into a host mirror (pinned memory, `non_blocking`) and records a CUDA event; `seen`
    returns the rows whose events have completed. On CUDA a loop so acts one or two steps after the device (the
    steps it takes meanwhile are harmless: dead nodes, unverified drafts); on CPU every row is there at once.
    """

    def __init__(self, device: torch.device, size: int, width: int = 1):
        self.cuda = device.type == "cuda"
        self.host = torch.zeros(max(size, 1), width, dtype=torch.long, pin_memory=self.cuda)
        self.host._host_mirror = True  # marks the reads tests/test_syncs.py counts as peeks, not syncs
        self.reset()

    def reset(self) -> Peek:
        """Forget the posted rows (the pinned buffer is kept: pinning memory is slow, so a decoder allocates once)."""
        self.events: list = []
        self.ready = 0
        return self

    def post(self, values: torch.Tensor) -> None:
        self.host[len(self.events)].copy_(values.reshape(-1), non_blocking=True)
        event = None
        if self.cuda:
            event = torch.cuda.Event()
            event.record()
        self.events.append(event)

    def seen(self) -> list[list[int]]:
        """The posted rows already on the host, oldest first."""
        while self.ready < len(self.events) and (self.events[self.ready] is None or self.events[self.ready].query()):
            self.ready += 1
        return self.host.tolist()[: self.ready]

    def first_true(self) -> int | None:
        """Index of the first posted row already on the host whose first value is nonzero, else None."""
        flags = [row[0] for row in self.seen()]
        return flags.index(True) if any(flags) else None

    @property
    def all_seen(self) -> bool:
        """Whether every posted row has been read."""
        return self.ready == len(self.events)
