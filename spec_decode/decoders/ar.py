"""Greedy autoregressive decoding of the target with a KV cache: the baseline."""

from __future__ import annotations

from spec_decode.decoders.base import Decoder, GenerationStats


class AutoregressiveDecoder(Decoder):
    """One target forward per token."""

    name = "ar"

    def __init__(self, target, cache_size: int | None = None, sink: int = 4):
        self.validate(cache_size, sink)
        super().__init__(target, cache_size, sink)

    def _round(self, remaining: int, stats: GenerationStats) -> list[int]:
        return self._target_step(stats)
