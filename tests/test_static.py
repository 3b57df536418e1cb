"""Static cache and padded fixed-size feeds: token-exact vs AR; the cache operations; the flags' validation."""

from __future__ import annotations

import zlib

import pytest
import torch

from spec_decode import kv, static
from spec_decode.bench import Measurement, Protocol, record, run_method
from spec_decode.data import Prompt
from spec_decode.decoders import build_decoder
from spec_decode.decoders.base import forward
from spec_decode.models import tiny_pair
from spec_decode.runner import CONF_DIR, ConfigError, method_specs, protocol_from
from tests.conftest import random_prompts
from tests.test_config import compose_cfg

METHODS = [
    ("ar", {}),
    *[("linear", {"k": k}) for k in range(1, 6)],
    ("linear", {"k": 4, "confidence": 0.4}),
    ("tree", {"depth": 4, "branch": 2}),
    ("tree", {"depth": 6, "branch": 3, "threshold": 0.05, "max_nodes": 40}),
    ("tree", {"depth": 5, "branch": 1}),
    ("tree", {"depth": 4, "branch": 3, "max_nodes": 1}),
    ("tree", {"depth": 8, "branch": 2, "threshold": 0.02, "max_nodes": 7}),
    ("tree", {"depth": 4, "branch": 2, "threshold": 0.05, "max_nodes": 10, "lookup": 6}),
    ("tree", {"depth": 6, "branch": 2, "threshold": 0.3, "max_nodes": 8, "lookup": 5, "lookup_first": True}),
]


def ar_tokens(pair, prompt, max_new_tokens, eos=None):
    return build_decoder("ar", pair.target).generate(prompt, max_new_tokens, eos).tokens


def static_decoder(pair, method, params, compile_backend=None):
    decoder = build_decoder(method, pair.target, pair.draft if method != "ar" else None, **params)
    static.configure(decoder, static_cache=True, compile=False)
    if compile_backend:  # the compiled code path through dynamo, off CUDA (tests only)
        decoder._compiled = {m: torch.compile(m, backend=compile_backend, dynamic=False)
                             for m in (pair.target, getattr(decoder, "draft", None)) if m is not None}
    return decoder


@pytest.mark.parametrize(("method", "params"), METHODS, ids=lambda x: str(x))
def test_static_matches_ar(pair64, method, params):
    decoder = static_decoder(pair64, method, params)
    prompts = random_prompts(5, seed=zlib.crc32(f"static{method}{params}".encode()) % 1000)
    for i, prompt in enumerate([prompts[0][:1], *prompts]):  # a 1-token prompt first
        assert decoder.generate(prompt, 40).tokens == ar_tokens(pair64, prompt, 40), f"prompt {i}"


@pytest.mark.parametrize("max_new_tokens", [1, 2, 3, 5])
@pytest.mark.parametrize(("method", "params"), [("linear", {"k": 5}), ("tree", {"depth": 6, "branch": 2}),
                                                ("tree", {"depth": 4, "branch": 2, "lookup": 6, "ngram": 1})])
def test_static_fewer_new_tokens_than_a_round(pair64, method, params, max_new_tokens):
    decoder = static_decoder(pair64, method, params)
    for prompt in random_prompts(3, seed=11):
        assert decoder.generate(prompt, max_new_tokens).tokens == ar_tokens(pair64, prompt, max_new_tokens)


@pytest.mark.parametrize(("method", "params"), [("linear", {"k": 5}), ("tree", {"depth": 5, "branch": 2})])
def test_static_eos_mid_round(pair64, method, params):
    prompt = random_prompts(1, seed=5)[0]
    eos = ar_tokens(pair64, prompt, 40)[25]
    expected = ar_tokens(pair64, prompt, 60, eos)
    assert expected[-1] == eos
    assert static_decoder(pair64, method, params).generate(prompt, 60, eos).tokens == expected


@pytest.mark.parametrize(("method", "params"), [("linear", {"k": 3}), ("tree", {"depth": 4, "branch": 2,
                                                                                "lookup": 4})])
def test_more_padding_changes_no_token(pair64, method, params, monkeypatch):
    """Blocks far larger than any feed (every feed padded, most by many rows) give AR's tokens."""
    monkeypatch.setattr(static, "block_sizes", lambda lookahead: (3, lookahead + 13))
    decoder = static_decoder(pair64, method, params)
    for prompt in random_prompts(4, seed=21):
        assert decoder.generate(prompt, 30).tokens == ar_tokens(pair64, prompt, 30)


def test_padded_rows_leave_the_real_rows_logits_unchanged(pair64):
    model, prefix, block = pair64.target, torch.tensor([5, 17, 99, 42, 7, 3]), torch.tensor([8, 9, 10])
    causal = torch.ones(3, 3, dtype=torch.bool).tril_()
    outs = []
    with torch.inference_mode():
        for rows in (3, 4, 11):
            cache = kv.StaticKVCache(model.config, 32, "cpu")
            forward(model, prefix, cache, torch.arange(6), kv.attention_mask(cache, None, torch.ones(6, 6).tril() > 0,
                                                                              model.dtype))
            cache.set_length(6)
            mask = kv.attention_mask(cache, None, causal, model.dtype, rows)
            outs.append(forward(model, static.pad(block, rows), cache, static.pad(torch.arange(6, 9), rows), mask)[:3])
        reference = forward(model, torch.cat([prefix, block]), kv.new_cache())[6:]
    for logits in outs[1:]:
        torch.testing.assert_close(logits, outs[0], rtol=0, atol=1e-12)
    # eager attention takes its softmax in float32: over 32 slots instead of 9 it rounds differently
    torch.testing.assert_close(outs[0], reference, rtol=0, atol=1e-5)


def test_static_mask_blocks_every_slot_past_the_fed_block():
    cache = kv.StaticKVCache(tiny_pair("llama").target.config, 16, "cpu")
    cache.set_length(5)
    block = torch.tensor([[True, False], [True, True]])
    visible = kv.attention_mask(cache, None, block, torch.float32, rows=4)[0, 0] == 0
    assert visible.shape == (4, 16)
    assert visible[0].tolist() == [True] * 6 + [False] * 10
    assert visible[1].tolist() == [True] * 7 + [False] * 9
    assert visible[2:].sum().item() == 2 and visible[2:, 0].all()  # padding rows: slot 0 only


def test_rollback_and_keep_path_move_the_length_within_the_same_tensors(pair):
    model = pair.target
    cache = kv.StaticKVCache(model.config, 32, "cpu")
    with torch.inference_mode():
        tokens = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
        forward(model, tokens, cache, torch.arange(8),
                kv.attention_mask(cache, None, torch.ones(8, 8).tril() > 0, model.dtype))
        cache.set_length(8)
        keys = cache.layers[0].keys
        before = keys.clone()
        kv.rollback(cache, 6)
        assert kv.cache_length(cache) == kv.next_position(cache) == 6 and int(cache.start) == 6
        kv.keep_path(cache, 2, torch.tensor([0, 2, 3]))
        assert kv.cache_length(cache) == 5 and cache.layers[0].keys is keys
        torch.testing.assert_close(keys[..., 2:5, :], before[..., [2, 4, 5], :])
        kv.rollback(cache, 30)  # past the valid length: nothing to drop
        assert kv.cache_length(cache) == 5


def test_the_cache_is_reused_across_generations_and_grows_when_needed(pair):
    decoder = static_decoder(pair, "linear", {"k": 3})
    decoder.generate([1, 2, 3], 10)
    first = decoder.target_cache
    pointer = first.layers[0].keys.data_ptr()
    decoder.generate([4, 5], 12)
    assert decoder.target_cache is first and first.layers[0].keys.data_ptr() == pointer
    decoder.generate(list(range(200)), 10)
    assert decoder.target_cache.capacity >= 200 + 10 + 8 > first.capacity


def test_compiled_code_path_matches_ar_through_dynamo(pair64):
    """The compiled branch (cudagraph step marks, logits copies, fixed shapes) traced by dynamo on CPU."""
    decoder = static_decoder(pair64, "tree", {"depth": 3, "branch": 2, "max_nodes": 8}, compile_backend="eager")
    for prompt in random_prompts(3, seed=3):
        assert decoder.generate(prompt, 20).tokens == ar_tokens(pair64, prompt, 20)


def test_flags_leave_params_unchanged_and_are_recorded(pair):
    prompts = [Prompt("", p) for p in random_prompts(2, seed=4)]
    plain = run_method(pair, "linear", {"k": 3}, prompts, Protocol(max_new_tokens=12, warmup=0, repeats=1))
    fixed = run_method(pair, "linear", {"k": 3}, prompts,
                       Protocol(max_new_tokens=12, warmup=0, repeats=1, static_cache=True))
    assert fixed["params"] == plain["params"] and fixed["static_cache"] is True and plain["static_cache"] is False
    assert [s["tokens"] for s in fixed["samples"]] == [s["tokens"] for s in plain["samples"]]
    hf = build_decoder("hf_assisted", pair.target, pair.draft)
    static.configure(hf, static_cache=True, compile=False)
    assert record(Measurement("hf_assisted", hf), {})["static_cache"] == "not applicable"


def test_validate_refuses_bad_flags():
    with pytest.raises(ValueError, match="compile=true needs a CUDA device; static_cache=true alone works on CPU"):
        static.validate(False, True, "cpu")
    with pytest.raises(ValueError, match="static_cache must be true or false"):
        static.validate("yes", False)
    with pytest.raises(ValueError, match="streaming"):
        static.validate(True, False, "cpu", {"streaming_tree": ("streaming_tree", {"cache_size": 64})})
    static.validate(True, False, "cpu", {"tree": ("tree", {"cache_size": None})})


@pytest.mark.parametrize("overrides", [["compile=true"], ["static_cache=true", "method=streaming_linear"],
                                       ["static_cache=1"]])
def test_runner_refuses_before_models_load(overrides):
    cfg = compose_cfg(*overrides)
    with pytest.raises(ConfigError):
        protocol_from(cfg, method_specs(cfg, CONF_DIR))


def test_decoder_refuses_compile_off_cuda_and_streaming(pair):
    decoder = build_decoder("linear", pair.target, pair.draft, k=2)
    decoder.compile = True
    with pytest.raises(ValueError, match="needs a CUDA device"):
        decoder.generate([1, 2], 4)
    streaming = build_decoder("streaming_ar", pair.target, cache_size=64)
    with pytest.raises(ValueError, match="streaming"):
        static.configure(streaming, static_cache=True, compile=False)
    streaming.static_cache = True
    with pytest.raises(ValueError, match="streaming"):
        streaming.generate([1, 2], 4)


@pytest.mark.cuda
@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
@pytest.mark.parametrize(("method", "params"), [("ar", {}), ("linear", {"k": 4}),
                                                ("tree", {"depth": 4, "branch": 2, "max_nodes": 12, "lookup": 4})])
def test_compiled_matches_eager_ar_on_cuda(arch, method, params):
    pair = tiny_pair(arch, seed=0)
    pair.target.to("cuda")
    pair.draft.to("cuda")
    decoder = build_decoder(method, pair.target, pair.draft if method != "ar" else None, **params)
    static.configure(decoder, static_cache=False, compile=True)
    for prompt in random_prompts(4, seed=9):
        assert decoder.generate(prompt, 32).tokens == ar_tokens(pair, prompt, 32)
