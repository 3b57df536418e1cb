"""KV-cache operations shared by the decoders: length, rollback, and keeping an accepted path."""

from __future__ import annotations

import torch
from transformers import DynamicCache


def new_cache() -> DynamicCache:
    """An empty transformers cache; layers are created on the first forward."""
    return DynamicCache()


def cache_length(cache: DynamicCache) -> int:
    """Number of positions currently held by the cache."""
    return cache.get_seq_length()


def rollback(cache: DynamicCache, length: int) -> None:
    """Drop every position at index >= `length` (a no-op when the cache is not longer)."""
    for layer in cache.layers:
        if layer.keys is not None and layer.keys.shape[-2] > length:
            layer.keys = layer.keys[..., :length, :]
            layer.values = layer.values[..., :length, :]


def keep_path(cache: DynamicCache, start: int, offsets: torch.Tensor) -> None:
    """Move positions `start + offsets` (ascending) to `start, start+1, ...` and drop the rest.

    This gathers the KV entries of an accepted tree path into place without recomputing them.
    """
    end = start + offsets.numel()
    index = offsets + start
    for layer in cache.layers:
        if layer.keys is None:
            continue
        layer.keys[..., start:end, :] = layer.keys.index_select(-2, index)
        layer.values[..., start:end, :] = layer.values.index_select(-2, index)
    rollback(cache, end)
