"""The CUDA path: exactness in float32 and float16 on the tiny pairs, memory counters, random models on the device.

float32 must match AR token for token; float16 must match or leave AR's tokens only at a near-tie (the divergence
fields of spec_decode.bench.compare), since fp16 kernels of different shapes may flip a tie.
"""

from __future__ import annotations

import pytest
import torch

from spec_decode.bench import Protocol, Reference, compare, run_method
from spec_decode.data import Prompt
from spec_decode.decoders import build_decoder
from spec_decode.models import load_pair
from tests.conftest import random_prompts

pytestmark = pytest.mark.cuda
METHODS = [("hf_greedy", {}), ("hf_assisted", {}), ("linear", {"k": 4}), ("tree", {"depth": 4, "branch": 2}),
           ("tree", {"depth": 6, "branch": 3, "threshold": 0.05, "max_nodes": 40})]


def cuda_pair(arch: str, dtype: str):
    return load_pair({"source": "tiny", "arch": arch, "seed": 1, "dtype": dtype, "device": "cuda"})


@pytest.fixture(scope="module", params=["gpt_neox", "llama"])
def arch(request):
    return request.param


@pytest.mark.parametrize(("method", "params"), METHODS, ids=str)
def test_float32_matches_ar_exactly(arch, method, params):
    pair = cuda_pair(arch, "float32")
    assert pair.target.device.type == "cuda"
    decoder = build_decoder(method, pair.target, pair.draft, **params)
    ar = build_decoder("ar", pair.target)
    for prompt in random_prompts(4, seed=31):
        assert decoder.generate(prompt, 48).tokens == ar.generate(prompt, 48).tokens


@pytest.mark.parametrize(("method", "params"), METHODS, ids=str)
def test_float16_diverges_from_ar_only_at_ties(arch, method, params):
    pair = cuda_pair(arch, "float16")
    decoder = build_decoder(method, pair.target, pair.draft, **params)
    ar = build_decoder("ar", pair.target)
    ar.record_margins = True
    for prompt in random_prompts(4, seed=37):
        tokens = ar.generate(prompt, 48).tokens
        fields = compare(decoder.generate(prompt, 48).tokens, Reference(tokens, ar.top2, "float16"))
        assert fields["first_divergence"] is None or fields["divergence_at_tie"], fields


def test_memory_counters_report_cuda_peaks():
    pair = cuda_pair("gpt_neox", "float16")
    prompts = [Prompt("", p) for p in random_prompts(2, seed=41)]
    for method, params in [("ar", {}), ("tree", {"depth": 4, "branch": 2})]:
        memory = run_method(pair, method, params, prompts, Protocol(max_new_tokens=16, warmup=1, repeats=1))["memory"]
        assert memory["kind"] == "cuda"
        assert memory["peak_allocated_mb"] > 0 and memory["peak_reserved_mb"] >= memory["peak_allocated_mb"]


def test_random_pythia_shaped_models_build_on_the_device():
    sizes = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 512,
             "vocab_size": 50304, "rotary_pct": 0.25, "use_parallel_residual": True}
    pair = load_pair({"source": "random", "dtype": "float16", "device": "cuda", "target": sizes,
                      "draft": sizes | {"num_hidden_layers": 1}})
    assert pair.target.device.type == "cuda" and pair.target.dtype == torch.float16
    assert pair.target.config._attn_implementation == "sdpa"
    out = build_decoder("tree", pair.target, pair.draft, depth=3, branch=2).generate([1, 2, 3], 8)
    assert len(out.tokens) == 8
