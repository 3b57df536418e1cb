"""What linear and tree speculation share: a draft model whose KV cache follows the committed text."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from spec_decode import kv
from spec_decode.decoders.base import Decoder, GenerationStats


class SpeculativeDecoder(Decoder):
    """A decoder with a draft model that keeps its own cache across rounds (never re-prefilled)."""

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
        """Feed the draft the committed tokens its cache lacks; return its logits after the last one."""
        start = kv.next_position(self.draft_cache)
        logits = self._feed_chunked(self.draft, self.draft_cache, self.committed[start : self.length], start)
        stats.draft_forwards += 1
        return logits
