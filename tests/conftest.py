"""Shared fixtures: tiny in-process model pairs (no files, no network)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spec_decode.models import tiny_pair

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` skip cleanly on machines without a CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", params=["gpt_neox", "llama"])
def pair(request):
    """Tiny float32 pair of each architecture."""
    return tiny_pair(request.param, seed=0)


@pytest.fixture(scope="session", params=["gpt_neox", "llama"])
def pair64(request):
    """Tiny float64 pair of each architecture, for tests where a near-tie must not flip an argmax."""
    return tiny_pair(request.param, seed=1, dtype=torch.float64)


def random_prompts(count: int, seed: int, vocab: int = 256, lengths: tuple[int, int] = (1, 40)) -> list[list[int]]:
    """Random byte-token prompts of random lengths, from a fixed seed."""
    gen = torch.Generator().manual_seed(seed)
    sizes = torch.randint(lengths[0], lengths[1] + 1, (count,), generator=gen).tolist()
    return [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in sizes]


ROOT = Path(__file__).resolve().parents[1]
FAST = ["model=tiny", "dataset=builtin", "threads=1", "num_prompts=2", "repeats=1", "warmup=1", "max_new_tokens=12"]


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """`python run.py ARGS` in the project root, output captured, no stdin."""
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL, **kwargs)


def assert_edge_cases_match_ar(pair, decoder, prompt: list[int]) -> None:
    """EOS inside a round, 1-token prompts and budgets of 1-5 new tokens: `decoder` emits AR's tokens."""
    from spec_decode.decoders import build_decoder

    ar = build_decoder("ar", pair.target)
    eos = ar.generate(prompt, 60).tokens[25]
    assert decoder.generate(prompt, 60, eos).tokens == ar.generate(prompt, 60, eos).tokens
    for token in (0, 97, 255):
        assert decoder.generate([token], 24).tokens == ar.generate([token], 24).tokens
    for budget in (1, 2, 3, 5):  # fewer new tokens than a tree is deep or a branch is long
        assert decoder.generate(prompt, budget).tokens == ar.generate(prompt, budget).tokens
