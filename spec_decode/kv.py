"""KV-cache operations shared by the decoders: rollback, accepted-path gather, sink eviction, masks.

Every operation takes absolute sequence positions. A plain `DynamicCache` holds position i in slot i.
A `SinkCache` (StreamingLLM) holds the first `sink` positions and a contiguous recent run; slot = position
for the sink and position - `evicted` after it. A `StaticKVCache` is pre-allocated (slot = position); only
its host-side `length` moves, and the slots past it are masked out.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, StaticLayer


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
        return in_window(query_positions, positions, self.sink, self.window)


class _SlotLayer(StaticLayer):
    """A pre-allocated layer that writes at the slots from its cache's shared `start` tensor on (never advances it)."""

    def __init__(self, max_cache_len: int, start: torch.Tensor):
        super().__init__(max_cache_len)
        self.start = start

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        slots = torch.arange(key_states.shape[-2], device=self.device) + self.start
        self.keys.index_copy_(2, slots, key_states)
        self.values.index_copy_(2, slots, value_states)
        return self.keys, self.values


class StaticKVCache(Cache):
    """`capacity` pre-allocated slots per layer, of which the first `length` (a host int) are valid.

    A forward writes its tokens at slots `length, length + 1, ...` (read from the device tensor `start`, so a
    captured CUDA graph sees the current value); the caller then moves `length` (`set_length`). Rolling back
    only moves `length`: the stale slots are never attended (see `attention_mask`) and get overwritten.
    """

    def __init__(self, config, capacity: int, device: torch.device | str):
        self.start = torch.zeros((), dtype=torch.long, device=device)
        torch._dynamo.mark_static_address(self.start)
        layers = config.get_text_config(decoder=True).num_hidden_layers
        super().__init__(layers=[_SlotLayer(capacity, self.start) for _ in range(layers)])
        self.capacity, self.length = capacity, 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def set_length(self, length: int) -> None:
        """Make the first `length` slots the valid ones; the next write starts there."""
        if not 0 <= length <= self.capacity:
            raise ValueError(f"static cache length {length} outside [0, {self.capacity}]")
        self.length = length
        self.start.fill_(length)


def in_window(query_positions: torch.Tensor, key_positions: torch.Tensor, sink: int, window: int) -> torch.Tensor:
    """Bool `(queries, keys)`, the StreamingLLM rule: a key is seen if it is a sink or inside the query's window."""
    return (key_positions[None, :] < sink) | (key_positions[None, :] > query_positions[:, None] - window)


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
    if isinstance(cache, StaticKVCache):
        if length < cache.length:
            cache.set_length(length)
        return
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
                   dtype: torch.dtype, rows: int | None = None) -> torch.Tensor:
    """Additive 4D mask `(1, 1, q, slots + q)` for feeding q tokens at `query_positions`.

    `block` (bool, q x b) says which of the last b columns (the newest cached slots, then the queries) each
    query sees; every earlier slot is seen, or, in a `SinkCache`, only those inside the query's window.
    A `StaticKVCache` gets `static_mask` instead (`rows` >= q: the fed block with its padding rows).
    """
    if isinstance(cache, StaticKVCache):
        return static_mask(cache, block, rows or block.shape[0], dtype)
    q, b = block.shape
    earlier = cache_length(cache) + q - b
    if isinstance(cache, SinkCache):
        seen = cache.visible(query_positions, earlier)
    else:
        seen = torch.ones(q, earlier, dtype=torch.bool, device=block.device)
    return additive_mask(torch.cat([seen, block], dim=1), dtype)


def static_mask(cache: StaticKVCache, block: torch.Tensor, rows: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive `(1, 1, rows, capacity)` mask for q = `block.shape[0]` real queries then `rows - q` padding rows.

    Real queries see the valid slots and `block` over the newest ones, as in `attention_mask`; every slot past
    the valid length + q is blocked. Padding rows see slot 0 only (finite garbage, never read).
    """
    q, b = block.shape
    end = cache.length + q
    visible = torch.zeros(rows, cache.capacity, dtype=torch.bool, device=block.device)
    visible[:q, : end - b] = True
    visible[:q, end - b : end] = block
    visible[q:, 0] = True
    return additive_mask(visible, dtype)


def additive_mask(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool `(q, k)` visibility as the 4D float mask transformers expects: 0 = attend, dtype min = blocked."""
    mask = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
    return mask.masked_fill_(~visible, torch.finfo(dtype).min)[None, None]
