"""Linear speculative decoding: the draft proposes K tokens, the target verifies them in one forward."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from spec_decode import kv
from spec_decode.decoders.base import GenerationStats, check_streaming
from spec_decode.decoders.speculative import SpeculativeDecoder


class LinearDecoder(SpeculativeDecoder):
    """Draft up to K tokens one by one; keep the longest prefix the target agrees with, plus its next token.

    With `confidence` > 0, drafting stops early after a token whose draft probability is below it (the
    token is still proposed), as transformers' `assistant_confidence_threshold` does.
    """

    name = "linear"

    def __init__(self, target: PreTrainedModel, draft: PreTrainedModel, k: int, confidence: float = 0.0,
                 cache_size: int | None = None, sink: int = 4):
        super().__init__(target, draft, cache_size, sink)
        self.validate(k, confidence, cache_size, sink)
        self.k, self.confidence = k, confidence

    @property
    def lookahead(self) -> int:
        return self.k + 1

    @staticmethod
    def validate(k: int, confidence: float = 0.0, cache_size: int | None = None, sink: int = 4) -> None:
        """Raise ValueError for knobs outside their range."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not 0.0 <= confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {confidence}")
        check_streaming(cache_size, sink, lookahead=k + 1, needed=k + 1)

    def params(self) -> dict:
        return {"k": self.k, "confidence": self.confidence} | super().params()

    def _round(self, remaining: int, stats: GenerationStats) -> list[int]:
        k = min(self.k, remaining - 1)
        if k == 0:
            return self._target_step(stats)
        drafts = self._propose(k, stats)
        k = drafts.numel()
        base = self.length  # committed tokens; the last one is pending in the target
        block = torch.cat([self.committed[base - 1 : base], drafts])
        logits = self._feed(self.target, self.target_cache, block, base - 1)
        stats.target_forwards += 1
        predicted = logits.argmax(-1)
        agree = (predicted[:-1] == drafts).cumprod(0).sum()
        accepted = int(agree)
        emitted = torch.cat([drafts[:accepted], predicted[accepted : accepted + 1]])
        self._commit(emitted)
        kv.rollback(self.target_cache, base + accepted)
        kv.rollback(self.draft_cache, base + accepted)
        stats.drafted_per_round.append(k)
        stats.accepted_per_round.append(accepted)
        return emitted.tolist()

    def _propose(self, k: int, stats: GenerationStats) -> torch.Tensor:
        """Up to K greedy draft tokens, each fed back to the draft except the last."""
        logits = self._draft_catch_up(stats)
        drafts = []
        for i in range(k):
            token = logits.argmax()
            drafts.append(token)
            if i == k - 1 or self._unsure(logits, token):
                break
            logits = self._feed(self.draft, self.draft_cache, token[None], self.length + i)[-1]
            stats.draft_forwards += 1
        return torch.stack(drafts)

    def _unsure(self, logits: torch.Tensor, token: torch.Tensor) -> bool:
        """Whether the draft's probability of its own choice fell below `confidence` (stop drafting)."""
        return self.confidence > 0 and float(logits.float().softmax(-1)[token]) < self.confidence
