"""Linear speculative decoding: the draft proposes K tokens, the target verifies them in one forward."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from spec_decode import kv
from spec_decode.decoders.base import GenerationStats, Round, check_flag, check_streaming, finite
from spec_decode.decoders.speculative import Peek, SpeculativeDecoder
from spec_decode.sampling import accept_drafts, draw


class LinearDecoder(SpeculativeDecoder):
    """Draft up to K tokens one by one; keep the longest prefix the target agrees with, plus its next token.

    With `confidence` > 0, drafting stops early after a token whose draft probability is below it (the
    token is still proposed), as transformers' `assistant_confidence_threshold` does.

    Sampling, the draft samples its tokens from its processed distribution q and the target keeps them by
    speculative sampling (`sampling.accept_drafts`): the emitted tokens are distributed exactly as the target's.
    A seed reproduces its sample only with `fallback` off: the fallback picks AR steps by measured time, and an
    AR step draws differently from a speculative round (tree methods draw alike, so they reproduce either way).
    """

    name = "linear"

    def __init__(self, target: PreTrainedModel, draft: PreTrainedModel, k: int, confidence: float = 0.0,
                 cache_size: int | None = None, sink: int = 4, fallback: bool = True):
        super().__init__(target, draft, cache_size, sink)
        self.validate(k, confidence, cache_size, sink, fallback)
        self.k, self.confidence, self.fallback = k, confidence, fallback
        self._peek = Peek(self.device, k)

    @property
    def lookahead(self) -> int:
        return self.k + 1

    @staticmethod
    def validate(k: int, confidence: float = 0.0, cache_size: int | None = None, sink: int = 4,
                 fallback: bool = True) -> None:
        """Raise ValueError for knobs outside their range."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not 0.0 <= confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {confidence}")
        check_flag("fallback", fallback)
        check_streaming(cache_size, sink, lookahead=k + 1, needed=k + 1)

    def params(self) -> dict:
        return {"k": self.k, "confidence": self.confidence} | super().params()

    def _round(self, remaining: int, stats: GenerationStats) -> Round:
        k = min(self.k, remaining - 1)
        if k == 0:
            return self._target_step(stats)
        drafts = self._propose(k, stats)
        k = drafts.numel()
        base = self.length  # committed tokens; the last one is pending in the target
        block = torch.cat([self.committed[base - 1 : base], drafts])
        logits = self._feed(self.target, self.target_cache, block, base - 1)
        stats.target_forwards += 1
        agree, nxt = self._accept(logits, drafts)
        emitted = torch.cat([drafts, nxt]).scatter_(0, agree[None], nxt)
        checks = {"target": finite(logits), "draft": self.draft_ok}
        accepted, *tokens = self._read(torch.cat([agree[None], emitted]), checks, stats.rounds + 1)
        self._commit(emitted[: accepted + 1])
        self._verified(base, accepted)
        return Round(tokens[: accepted + 1], drafted=k, accepted=accepted)

    def _verified(self, base: int, accepted: int) -> None:
        """After a round's commit (`base`: its first drafted position): both caches keep the accepted drafts."""
        kv.rollback(self.target_cache, base + accepted)
        kv.rollback(self.draft_cache, base + accepted)

    def _accept(self, logits: torch.Tensor, drafts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """How many drafts the target keeps, and its token after them (1-d): the longest prefix its argmax agrees
        with, or (sampling) speculative sampling against the draft's distributions."""
        if self.sampling.greedy:
            predicted = logits.argmax(-1)
            agree = (predicted[:-1] == drafts).cumprod(0).sum()
            return agree, predicted.gather(0, agree[None])
        u = torch.rand(drafts.numel() + 1, generator=self.generator, dtype=torch.float64, device=self.device)
        agree, nxt = accept_drafts(self.sampling.probs(logits), torch.stack(self._q[: drafts.numel()]), drafts, u)
        return agree, nxt[None]

    def _propose(self, k: int, stats: GenerationStats) -> torch.Tensor:
        """Up to K draft tokens (greedy or sampled), each fed back to the draft except the last.

        With `confidence`, drafting stops after the first unsure token; the stop is peeked without blocking, and
        where the device had not reported every flag by the end, one host read counts the tokens to verify.
        """
        logits = self._draft_catch_up(stats)
        drafts, doubts, self._q = [], [], []
        peek = self._peek.reset() if self.confidence > 0 else None
        for i in range(k):
            drafts.append(self._draft_token(logits))
            if i == k - 1:
                break
            if peek is not None:
                doubts.append(self._unsure(logits, drafts[-1]))
                peek.post(doubts[-1].long())
                first = peek.first_true()
                if first is not None:
                    return torch.stack(drafts[: first + 1])
            logits = self._draft_feed(drafts[-1][None], self.length + i, stats)[-1]
        if not doubts or peek.all_seen:
            return torch.stack(drafts)
        doubt = torch.stack(doubts)  # one flag per draft token but the last
        last = torch.where(doubt.any(), doubt.long().argmax(), len(drafts) - 1)
        return torch.stack(drafts[: int(last) + 1])  # a host read, only where a flag had not reached the host

    def _draft_token(self, logits: torch.Tensor) -> torch.Tensor:
        """The draft's next token: its argmax, or (sampling) a draw from its processed distribution, kept in `_q`."""
        if self.sampling.greedy:
            return logits.argmax()
        self._q.append(self.sampling.probs(logits))
        u = torch.rand((), generator=self.generator, dtype=torch.float64, device=self.device)
        return draw(self._q[-1], u)

    def _unsure(self, logits: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        """Bool scalar: the draft's probability of its own choice fell below `confidence` (stop drafting)."""
        if not self.sampling.greedy:
            return self._q[-1][token] < self.confidence  # the drawn token's processed probability
        return logits.float().softmax(-1).max() < self.confidence  # the argmax token's probability
