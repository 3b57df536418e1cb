"""StreamingLLM sink caches under speculation: exactness, bounded size, sinks kept."""

from __future__ import annotations

import pytest
import torch

from spec_decode import kv
from spec_decode.decoders import build_decoder
from tests.conftest import random_prompts

SPECULATIVE = [("linear", {"k": 4}), ("tree", {"depth": 4, "branch": 2, "threshold": 0.02, "max_nodes": 12})]


def lookahead(method: str, params: dict) -> int:
    return params["k"] + 1 if method == "linear" else params["max_nodes"] + 1


@pytest.mark.parametrize(("method", "params"), [("ar", {}), *SPECULATIVE])
def test_large_cache_matches_non_streaming(pair64, method, params):
    plain = build_decoder(method, pair64.target, pair64.draft, **params)
    streaming = build_decoder(f"streaming_{method}", pair64.target, pair64.draft, cache_size=512, **params)
    for prompt in random_prompts(3, seed=21):
        out = streaming.generate(prompt, 60)
        assert out.tokens == plain.generate(prompt, 60).tokens
        assert out.stats.compressions == 0


@pytest.mark.parametrize(("method", "params"), SPECULATIVE)
@pytest.mark.parametrize("cache_size", [40, 64])
def test_small_cache_matches_streaming_ar_with_the_same_window(pair64, method, params, cache_size):
    """Same sink and window => same tokens; a round of L tokens needs L-1 more slots than AR's round of 1."""
    speculative = build_decoder(f"streaming_{method}", pair64.target, pair64.draft, cache_size=cache_size,
                                sink=4, **params)
    ar = build_decoder("streaming_ar", pair64.target, cache_size=cache_size - lookahead(method, params) + 1, sink=4)
    assert speculative.window == ar.window
    for prompt in random_prompts(3, seed=cache_size, lengths=(1, 50)):
        out = speculative.generate(prompt, 120)
        reference = ar.generate(prompt, 120)
        assert out.tokens == reference.tokens
        assert out.stats.compressions > 5


@pytest.mark.parametrize(("method", "params"), [("ar", {}), *SPECULATIVE])
def test_cache_never_exceeds_its_size_and_keeps_the_sink(pair, method, params):
    cache_size, sink = 48, 4
    decoder = build_decoder(f"streaming_{method}", pair.target, pair.draft, cache_size=cache_size, sink=sink,
                            **params)
    seen: list[int] = []
    hooks = [model.register_forward_hook(lambda *_: seen.append(kv.cache_length(decoder.target_cache)))
             for model in (pair.target,)]
    prompt = random_prompts(1, seed=8, lengths=(70, 70))[0]
    try:
        out = decoder.generate(prompt, 150)
    finally:
        for hook in hooks:
            hook.remove()
    assert max(seen) <= cache_size
    assert max(out.stats.cache_length_per_round) <= cache_size
    assert out.stats.compressions > 0
    with torch.inference_mode():
        fresh = kv.new_cache()
        pair.target(input_ids=torch.tensor([prompt[:sink]]), cache=fresh, use_cache=True)
    for kept, original in zip(decoder.target_cache.layers, fresh.layers, strict=True):
        torch.testing.assert_close(kept.keys[..., :sink, :], original.keys, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("method", "params"), SPECULATIVE)
def test_two_thousand_tokens_with_cache_64(pair, method, params):
    decoder = build_decoder(f"streaming_{method}", pair.target, pair.draft, cache_size=64, **params)
    out = decoder.generate(random_prompts(1, seed=1)[0], 2000)
    assert len(out.tokens) == 2000
    assert max(out.stats.cache_length_per_round) <= 64


def test_cache_too_small_for_a_round_is_a_clear_error(pair):
    with pytest.raises(ValueError, match="cache_size 16 too small"):
        build_decoder("streaming_tree", pair.target, pair.draft, cache_size=16, depth=4, branch=2, max_nodes=12)
    with pytest.raises(ValueError, match="need it"):
        build_decoder("streaming_linear", pair.target, pair.draft, k=4)
    with pytest.raises(ValueError, match="streaming_"):
        build_decoder("linear", pair.target, pair.draft, k=4, cache_size=64)


def windowed_greedy(model, prompt: list[int], tokens: list[int], sink: int, window: int) -> list[int]:
    """The greedy choice after every position of prompt + tokens from one uncached forward with the sink+window mask."""
    seq = torch.tensor(prompt + tokens)
    i = torch.arange(seq.numel())
    visible = (i[None] <= i[:, None]) & ((i[None] < sink) | (i[None] > i[:, None] - window))
    with torch.inference_mode():
        logits = model(input_ids=seq[None], attention_mask=kv.additive_mask(visible, model.dtype)).logits[0]
    return logits.argmax(-1)[len(prompt) - 1 : -1].tolist()


def test_window_shorter_than_a_round_matches_the_windowed_reference(pair64):
    """A prompt chunk of `lookahead` (15) tokens is longer than the window (12): each query still sees only its own."""
    tree = build_decoder("streaming_tree", pair64.target, pair64.draft, cache_size=30, depth=3, branch=2)
    ar = build_decoder("streaming_ar", pair64.target, cache_size=30 - tree.lookahead + 1)
    assert tree.window == ar.window == 12 < tree.lookahead
    for prompt in random_prompts(12, seed=5, lengths=(1, 60)):
        out = tree.generate(prompt, 24).tokens
        assert out == ar.generate(prompt, 24).tokens
        assert out == windowed_greedy(pair64.target, prompt, out, sink=4, window=12)
