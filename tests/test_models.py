"""Model pairs: the tiny pair is deterministic and offline; bad configs fail with clear errors."""

from __future__ import annotations

import pytest
import torch

from spec_decode.models import ModelLoadError, byte_tokenizer, load_pair, tiny_pair


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
])
def test_bad_model_configs_raise_model_load_error(cfg):
    with pytest.raises(ModelLoadError):
        load_pair(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_requested_without_cuda():
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        load_pair({"source": "tiny", "device": "cuda"})
