"""Linear speculation with an EAGLE-style feature draft: the draft reads the target's last hidden states."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from spec_decode import kv
from spec_decode.decoders.base import GenerationStats, finite
from spec_decode.decoders.linear import LinearDecoder


class FeatureLinearDecoder(LinearDecoder):
    """Linear speculation whose draft (`offline.FeatureDraftForCausalLM`) reads, with each token, the target's last
    hidden state at the position before (Li et al., 2024, EAGLE), and within a round its own predicted ones.

    Every target forward (prefill, AR step, verification) leaves its hidden states in `features`; after a round
    the draft's cache is cut back to the round's start, so the accepted tokens are fed to it again with the
    target's states instead of its own guesses. Tokens are verified exactly as in linear speculation.
    """

    name = "eagle"
    keeps_hidden = True

    def __init__(self, target: PreTrainedModel, draft: PreTrainedModel, k: int, confidence: float = 0.0,
                 fallback: bool = True):
        self.validate(k, confidence, fallback=fallback)
        if not getattr(draft, "takes_features", False):
            raise ValueError("method eagle needs a feature draft (model.feature_draft: a folder written by "
                             "scripts/distill_draft.py train --feature)")
        super().__init__(target, draft, k, confidence, fallback=fallback)

    @staticmethod
    def validate(k: int, confidence: float = 0.0, cache_size: int | None = None, sink: int = 4,
                 fallback: bool = True) -> None:
        """Raise ValueError for knobs outside their range (no streaming cache: the states would need evicting too)."""
        if cache_size is not None:
            raise ValueError("method eagle does not stream (no cache_size)")
        LinearDecoder.validate(k, confidence, fallback=fallback)

    def _begin(self, prompt: torch.Tensor, max_new_tokens: int) -> None:
        if self.static_cache or self.compile:
            raise ValueError("method eagle runs on dynamic caches only (static_cache and compile are off for it)")
        super()._begin(prompt, max_new_tokens)
        # row p + 1 holds the target's state at position p; row 0 (before the first token) stays zero
        width = self.target.config.hidden_size
        self.features = torch.zeros(self.committed.numel() + 1, width, dtype=self.target.dtype, device=self.device)

    def _prefilled(self, ids: torch.Tensor, logits: torch.Tensor) -> None:
        """The prefill or an AR step fed `ids` up to the pending token: keep their states."""
        n = ids.numel()
        self.features[self.length - n + 1 : self.length + 1] = self.last_hidden["target"][-n:]

    def _verified(self, base: int, accepted: int) -> None:
        """Keep the states of the accepted tokens; the draft re-reads them next round with these states."""
        self.features[base : base + accepted + 1] = self.last_hidden["target"][: accepted + 1]
        kv.rollback(self.target_cache, base + accepted)
        kv.rollback(self.draft_cache, base)

    def _draft_catch_up(self, stats: GenerationStats) -> torch.Tensor:
        """Feed the draft the committed tokens its cache lacks, each with the target's state before it."""
        start = kv.next_position(self.draft_cache)
        ids = self.committed[start : self.length]
        logits = self._feed(self.draft, self.draft_cache, ids, start, last_only=True,
                            features=self.features[start : self.length])[-1]
        stats.draft_forwards += 1
        self.draft_ok = finite(logits)
        return logits

    def _draft_feed(self, ids: torch.Tensor, start: int, stats: GenerationStats, positions: torch.Tensor | None = None,
                    block: torch.Tensor | None = None) -> torch.Tensor:
        """One draft step: its token with the draft's own predicted state of the position before."""
        predicted = self.last_hidden["draft"][-1:]
        logits = self._feed(self.draft, self.draft_cache, ids, start, positions, block, features=predicted)
        stats.draft_forwards += 1
        self.draft_ok = self.draft_ok & finite(logits)
        return logits
