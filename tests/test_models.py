"""Model pairs: the tiny pair is deterministic and offline; bad configs fail with clear errors."""

from __future__ import annotations

import pytest
import torch

from spec_decode.decoders import build_decoder
from spec_decode.models import (
    ModelLoadError,
    WeightLeftLinear,
    byte_tokenizer,
    load_pair,
    tiny_pair,
    use_weight_left_gemm,
)


def test_tiny_pair_is_deterministic_from_seed():
    a, b = tiny_pair("gpt_neox", seed=3), tiny_pair("gpt_neox", seed=3)
    for (name, p), q in zip(a.target.state_dict().items(), b.target.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    other = tiny_pair("gpt_neox", seed=4).target.get_output_embeddings().weight
    assert not torch.equal(other, a.target.get_output_embeddings().weight)


def test_tiny_draft_is_smaller_and_shares_vocabulary():
    for arch in ("gpt_neox", "llama"):
        pair = tiny_pair(arch)
        assert pair.draft.config.num_hidden_layers < pair.target.config.num_hidden_layers
        assert pair.draft.config.vocab_size == pair.target.config.vocab_size == len(pair.tokenizer)


def test_byte_tokenizer_round_trips_text():
    tok = byte_tokenizer()
    text = "The future of artificial intelligence is — ünïcode"
    assert tok.decode(tok(text)["input_ids"]) == text
    assert tok.eos_token_id == 256


def test_load_pair_from_config():
    pair = load_pair({"source": "tiny", "arch": "llama", "dtype": "float64", "device": "cpu", "name": "tiny"})
    assert pair.target.dtype == torch.float64
    assert pair.info["name"] == "tiny" and pair.info["draft_parameters"] < pair.info["target_parameters"]


@pytest.mark.parametrize("cfg", [
    {"source": "tiny", "dtype": "float8"},
    {"source": "nowhere"},
    {"source": "hub", "target": "/no/such/model", "draft": "/no/such/draft"},
    {"source": "tiny", "weight_left_gemm": "yes"},
])
def test_bad_model_configs_raise_model_load_error(cfg):
    with pytest.raises(ModelLoadError):
        load_pair(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_requested_without_cuda():
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        load_pair({"source": "tiny", "device": "cuda"})


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 1, 6), (1, 2, 6), (1, 5, 6), (7, 6), (2, 3, 6)])
def test_weight_left_linear_equals_f_linear(shape, bias):
    """Same values as `F.linear` (one row too, computed padded) and a contiguous output: a transposed view would
    send later kernels (SDPA on CPU) down their slow strided paths."""
    torch.manual_seed(0)
    dense = torch.nn.Linear(6, 4, bias=bias, dtype=torch.float64)
    swapped = torch.nn.Linear(6, 4, bias=bias, dtype=torch.float64)
    swapped.load_state_dict(dense.state_dict())
    use_weight_left_gemm(swapped)
    assert type(swapped) is WeightLeftLinear
    x = torch.randn(shape, dtype=torch.float64)
    out = swapped(x)
    assert out.shape == dense(x).shape == (*shape[:-1], 4) and out.is_contiguous()
    torch.testing.assert_close(out, dense(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method,params", [("linear", {"k": 4}), ("tree", {"depth": 4, "branch": 2, "max_nodes": 8}),
                                           ("tree", {"depth": 3, "branch": 2, "lookup": 6, "recycle": 4})])
def test_weight_left_gemm_pair_keeps_tokens_equal_to_ar(method, params):
    cfg = {"source": "tiny", "arch": "llama", "dtype": "float64", "weight_left_gemm": True}
    pair = load_pair(cfg)
    linears = [m for m in pair.target.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(type(m) is WeightLeftLinear for m in linears) and pair.info["weight_left_gemm"]
    plain = load_pair(cfg | {"weight_left_gemm": False})
    for seed in range(4):
        prompt = torch.randint(0, 256, (1 + 7 * seed,), generator=torch.Generator().manual_seed(seed)).tolist()
        ar = build_decoder("ar", plain.target).generate(prompt, 24).tokens
        spec = build_decoder(method, pair.target, pair.draft, fallback=False, **params).generate(prompt, 24).tokens
        assert spec == ar
