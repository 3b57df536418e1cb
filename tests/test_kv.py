"""Cache operations: rollback and the accepted-path gather match a sequential run."""

from __future__ import annotations

import torch

from spec_decode import kv
from spec_decode.decoders.base import forward
from spec_decode.tree import Level, TokenTree


def sequential_logits(model, tokens: list[int]) -> torch.Tensor:
    cache = kv.new_cache()
    return forward(model, torch.tensor(tokens), cache)[-1]


def test_gathered_path_gives_sequential_logits(pair):
    model = pair.target
    prefix = [5, 17, 99, 42, 7]
    tree = TokenTree(capacity=20)
    level = tree.reset(torch.tensor(prefix[-1]))
    level = tree.grow(level, torch.randn(1, 256, generator=torch.Generator().manual_seed(0)) * 4, 3, 0.0)
    tree.grow(level, torch.randn(3, 256, generator=torch.Generator().manual_seed(1)) * 4, 2, 0.0)
    cache = kv.new_cache()
    with torch.inference_mode():
        forward(model, torch.tensor(prefix[:-1]), cache)
        positions = len(prefix) - 1 + tree.depth[: tree.size]
        mask = kv.attention_mask(cache, positions, tree.block(Level(0, tree.size), 0), model.dtype)
        forward(model, tree.tokens[: tree.size], cache, positions, mask)
        path = torch.tensor([0, 2, 6])  # root -> second child -> one of its children
        assert tree.parents[6] == 2
        kv.keep_path(cache, len(prefix) - 1, path)
        assert kv.cache_length(cache) == len(prefix) + 2
        nxt = 123
        gathered = forward(model, torch.tensor([nxt]), cache)[-1]
        expected = sequential_logits(model, prefix + tree.tokens[path[1:]].tolist() + [nxt])
    torch.testing.assert_close(gathered, expected, atol=1e-5, rtol=0)


def test_rollback_gives_sequential_logits(pair):
    model = pair.target
    tokens = [3, 14, 15, 92, 65, 35, 89, 79]
    cache = kv.new_cache()
    with torch.inference_mode():
        forward(model, torch.tensor(tokens), cache)
        kv.rollback(cache, 4)
        assert kv.cache_length(cache) == 4
        logits = forward(model, torch.tensor([200]), cache)[-1]
        expected = sequential_logits(model, tokens[:4] + [200])
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
