"""Static cache and compiled forwards (optional): fixed-size feeds into a pre-allocated cache.

With `static_cache`, every feed after the prompt is padded to one of a decoder's few block sizes (1 and its
`lookahead`) with masked padding rows, so `torch.compile(mode="reduce-overhead")` (CUDA graphs) sees a small
fixed set of shapes. Padding writes KV past the valid length, where it is never attended and gets overwritten,
so the tokens are exactly the eager path's. `compile` implies `static_cache` and needs CUDA.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from spec_decode import kv

COMPILE_OPTIONS = {"mode": "reduce-overhead", "fullgraph": False, "dynamic": False}
RECOMPILE_LIMIT = 64  # graphs per code object: target and draft share transformers' forward code; 2 sizes each


def validate(static_cache, compile, device: str = "cpu", methods: dict[str, tuple[str, dict]] | None = None) -> None:
    """Raise ValueError for bad static_cache / compile values or combinations, before any model loads."""
    for key, value in (("static_cache", static_cache), ("compile", compile)):
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, got {value!r}")
    if compile and not _is_cuda(device):
        raise ValueError("compile=true needs a CUDA device; static_cache=true alone works on CPU")
    if static_cache or compile:
        for method, (_, params) in (methods or {}).items():
            if params.get("cache_size") is not None:
                raise ValueError(f"method {method!r}: static_cache/compile do not support the streaming methods "
                                 "(their sink cache evicts slots); run them with static_cache=false")


def _is_cuda(device: str) -> bool:
    if device == "auto":
        return torch.cuda.is_available()
    return str(device).startswith("cuda")


def configure(decoder, static_cache: bool, compile: bool) -> None:
    """Set the flags on one of our decoders (ValueError where they cannot work); HF decoders are left as they are."""
    if not applies(decoder):
        return
    decoder.static_cache = static_cache or compile
    decoder.compile = compile
    if decoder.static_cache:
        check(decoder)


def applies(decoder) -> bool:
    """Whether static_cache / compile mean anything for this decoder (ours; transformers' manage their own cache)."""
    return hasattr(decoder, "_feed_static")


def label(decoder) -> bool | str:
    """What a run record says about the static cache: true, false, or 'not applicable' (HF methods)."""
    return decoder.static_cache if applies(decoder) else "not applicable"


def check(decoder) -> None:
    """Raise ValueError when a decoder's flags cannot work (streaming cache, compile off CUDA)."""
    if decoder.cache_size is not None:
        raise ValueError("static_cache does not support the streaming methods (cache_size is set)")
    if decoder.compile and decoder.device.type != "cuda":
        raise ValueError("compile=true needs a CUDA device; static_cache=true alone works on CPU")


def block_sizes(lookahead: int) -> tuple[int, ...]:
    """The query counts a decoder's padded feeds take: single tokens, and whole rounds."""
    return tuple(sorted({1, lookahead}))


def rows_for(q: int, sizes: tuple[int, ...]) -> int:
    """The smallest block size holding q tokens; q itself when none does (fed unpadded, eagerly)."""
    return next((size for size in sizes if size >= q), q)


def pad(values: torch.Tensor, rows: int) -> torch.Tensor:
    """A new tensor: `values` extended to `rows` entries by repeating its last one (padding rows are masked)."""
    return torch.cat([values, values[-1:].expand(rows - values.numel())])


def capacity(tokens: int) -> int:
    """Slots to allocate for `tokens`, rounded up to a power of two so few sizes (compiled shapes) occur."""
    return 1 << max(tokens - 1, 1).bit_length()


def cache_for(cache: kv.StaticKVCache | None, model: PreTrainedModel, tokens: int) -> kv.StaticKVCache:
    """An empty static cache for `model` holding `tokens`: `cache` reused (same addresses) when it is big enough."""
    if cache is None or cache.capacity < tokens:
        cache = kv.StaticKVCache(model.config, capacity(tokens), model.device)
    cache.set_length(0)
    return cache


def compile_model(model: PreTrainedModel):
    """`model` compiled for CUDA-graph replay of its fixed-shape feeds."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    return torch.compile(model, **COMPILE_OPTIONS)
