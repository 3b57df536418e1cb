"""What linear and tree speculation share: a draft model whose KV cache follows the committed text."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from spec_decode import kv
from spec_decode.decoders.base import Decoder, GenerationStats, forward


class SpeculativeDecoder(Decoder):
    """A decoder with a draft model that keeps its own cache across rounds (never re-prefilled)."""

    def __init__(self, target: PreTrainedModel, draft: PreTrainedModel):
        super().__init__(target)
        if draft.device != target.device:
            raise ValueError(f"draft on {draft.device} but target on {target.device}")
        self.draft = draft

    def _begin(self, prompt: torch.Tensor, max_new_tokens: int) -> None:
        super()._begin(prompt, max_new_tokens)
        self.draft_cache = kv.new_cache()

    def _draft_catch_up(self, stats: GenerationStats) -> torch.Tensor:
        """Feed the draft the committed tokens its cache lacks; return its logits after the last one."""
        start = kv.cache_length(self.draft_cache)
        logits = forward(self.draft, self.committed[start : self.length], self.draft_cache, last_only=True)
        stats.draft_forwards += 1
        return logits[-1]
