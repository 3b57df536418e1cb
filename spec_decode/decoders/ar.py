"""Autoregressive decoding of the target with a KV cache (greedy or sampled): the baseline."""

from __future__ import annotations

import torch

from spec_decode.decoders.base import Decoder, Generation, GenerationStats, Round, StopIds


class AutoregressiveDecoder(Decoder):
    """One target forward per token.

    With `record_margins` (off by default; for diagnostics and tests) every step also keeps the target's top-2
    logits on the device, in a buffer read once after the generation: `top2` then holds one (top-1, top-2) pair
    per emitted token. Tokens never change. The benchmark does not use it: it takes the reference's margins from
    one untimed forward (`bench.top2_logits`), so AR's timed steps do no extra work.
    """

    name = "ar"
    record_margins = False

    def __init__(self, target, cache_size: int | None = None, sink: int = 4):
        self.validate(cache_size, sink)
        super().__init__(target, cache_size, sink)
        self.top2: list[list[float]] | None = None

    def generate(self, prompt_ids: torch.Tensor | list[int], max_new_tokens: int,
                 eos_token_id: StopIds = None, seed: int = 0) -> Generation:
        out = super().generate(prompt_ids, max_new_tokens, eos_token_id, seed)
        self.top2 = self._top2[: len(out.tokens)].tolist() if self.record_margins else None  # after the timers
        return out

    def _begin(self, prompt: torch.Tensor, max_new_tokens: int) -> None:
        super()._begin(prompt, max_new_tokens)
        if self.record_margins:
            self._top2 = torch.zeros(max_new_tokens, 2, dtype=torch.float32, device=self.device)

    def _feed(self, model, cache, ids, start, positions=None, block=None, last_only=False) -> torch.Tensor:
        """A target forward; when recording, its last row's top-2 logits go to the slot of the token it decides."""
        logits = super()._feed(model, cache, ids, start, positions, block, last_only)
        if self.record_margins:
            self._top2[self.length - self._origin] = logits[-1].float().topk(2).values
        return logits

    def _round(self, remaining: int, stats: GenerationStats) -> Round:
        return self._target_step(stats)
