"""KV-cache operations shared by the decoders: rollback, accepted-path gather, sink eviction, masks.

Every operation takes absolute sequence positions. A plain `DynamicCache` holds position i in slot i.
A `SinkCache` (StreamingLLM) holds the first `sink` positions and a contiguous recent run; slot = position
for the sink and position - `evicted` after it.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache


class SinkCache(DynamicCache):
    """Attention sinks + a recent window: each query at position p sees positions < `sink` and > p - `window`.

    Slots no future query can see are evicted before each round (`evict_before`); the decoders' masks give
    every query exactly its own window, so the tokens do not depend on when eviction happens. Keys keep the
    rotary positions they were computed with (absolute positions; no re-rotation).
    """

    def __init__(self, sink: int, window: int):
        super().__init__()
        self.sink, self.window = sink, window
        self.evicted = 0
        self.compressions = 0

    def evict_before(self, query_position: int) -> None:
        """Drop the slots outside the window of every query at `query_position` or later."""
        keep_from = query_position - self.window + 1 - self.evicted  # first slot still visible
        if keep_from <= self.sink:
            return
        for layer in self.layers:
            if layer.keys is not None:
                layer.keys = torch.cat([layer.keys[..., : self.sink, :], layer.keys[..., keep_from:, :]], dim=-2)
                layer.values = torch.cat([layer.values[..., : self.sink, :], layer.values[..., keep_from:, :]],
                                         dim=-2)
        self.evicted += keep_from - self.sink
        self.compressions += 1

    def visible(self, query_positions: torch.Tensor, slots: int) -> torch.Tensor:
        """Bool `(queries, slots)`: which of the first `slots` slots each query may attend to."""
        index = torch.arange(slots, device=query_positions.device)
        positions = torch.where(index < self.sink, index, index + self.evicted)
        return (positions < self.sink) | (positions[None, :] > query_positions[:, None] - self.window)


def new_cache(sink: int | None = None, window: int | None = None) -> DynamicCache:
    """An empty transformers cache; a `SinkCache` when a sink and window are given."""
    return DynamicCache() if window is None else SinkCache(sink, window)


def cache_length(cache: DynamicCache) -> int:
    """Number of slots currently held by the cache."""
    return cache.get_seq_length()


def next_position(cache: DynamicCache) -> int:
    """The absolute position the next token fed to this cache takes."""
    return cache_length(cache) + evicted(cache)


def evicted(cache: DynamicCache) -> int:
    """How many positions before the recent run were dropped (0 for a plain cache)."""
    return getattr(cache, "evicted", 0)


def rollback(cache: DynamicCache, position: int) -> None:
    """Drop every slot holding a position >= `position`."""
    length = position - evicted(cache)
    for layer in cache.layers:
        if layer.keys is not None and layer.keys.shape[-2] > length:
            layer.keys = layer.keys[..., :length, :]
            layer.values = layer.values[..., :length, :]


def keep_path(cache: DynamicCache, position: int, offsets: torch.Tensor) -> None:
    """Move the entries at `position + offsets` (ascending) to `position, position+1, ...`; drop the rest.

    This gathers the KV entries of an accepted tree path into place without recomputing them.
    """
    start = position - evicted(cache)
    end = start + offsets.numel()
    index = offsets + start
    for layer in cache.layers:
        if layer.keys is None:
            continue
        layer.keys[..., start:end, :] = layer.keys.index_select(-2, index)
        layer.values[..., start:end, :] = layer.values.index_select(-2, index)
    rollback(cache, position + offsets.numel())


def attention_mask(cache: DynamicCache, query_positions: torch.Tensor, block: torch.Tensor,
                   dtype: torch.dtype) -> torch.Tensor:
    """Additive 4D mask `(1, 1, q, slots + q)` for feeding q tokens at `query_positions`.

    `block` (bool, q x b) says which of the last b columns (the newest cached slots, then the queries) each
    query sees; every earlier slot is seen, or, in a `SinkCache`, only those inside the query's window.
    """
    q, b = block.shape
    earlier = cache_length(cache) + q - b
    if isinstance(cache, SinkCache):
        seen = cache.visible(query_positions, earlier)
    else:
        seen = torch.ones(q, earlier, dtype=torch.bool, device=block.device)
    return additive_mask(torch.cat([seen, block], dim=1), dtype)


def additive_mask(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool `(q, k)` visibility as the 4D float mask transformers expects: 0 = attend, dtype min = blocked."""
    mask = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
    return mask.masked_fill_(~visible, torch.finfo(dtype).min)[None, None]
