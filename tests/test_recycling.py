"""Token Recycling: exact against AR, the template's shape, the table's update rule, the table cleared after warm-up."""

from __future__ import annotations

import pytest
import torch

from spec_decode.bench import Protocol, prepare, warm_up
from spec_decode.data import Prompt
from spec_decode.decoders import build_decoder
from spec_decode.tree import rank_template
from tests.conftest import random_prompts

SHAPES = [{"depth": 8, "branch": 8, "max_nodes": 48}, {"depth": 3, "branch": 2, "max_nodes": 5},
          {"depth": 1, "branch": 1, "max_nodes": 1}]


def ar_tokens(pair, prompt, max_new_tokens, eos=None):
    return build_decoder("ar", pair.target).generate(prompt, max_new_tokens, eos).tokens


@pytest.mark.parametrize("params", SHAPES)
@pytest.mark.parametrize("keep_table", [True, False])
def test_recycling_emits_ar_tokens(pair64, params, keep_table):
    decoder = build_decoder("recycling", pair64.target, keep_table=keep_table, **params)
    for prompt in random_prompts(6, seed=3):
        assert decoder.generate(prompt, 40).tokens == ar_tokens(pair64, prompt, 40)


def test_recycling_stops_at_eos_inside_a_round_and_at_short_budgets(pair64):
    prompt = list(range(40, 60))
    free = ar_tokens(pair64, prompt, 60)
    eos = free[25]
    decoder = build_decoder("recycling", pair64.target)
    decoder.generate(prompt, 60)  # a table that predicts this text well: rounds accept many tokens
    assert decoder.generate(prompt, 60, eos).tokens == ar_tokens(pair64, prompt, 60, eos)
    for budget in (1, 2, 3):
        assert decoder.generate([7], budget).tokens == ar_tokens(pair64, [7], budget)


def test_a_known_text_is_accepted_in_long_rounds_once_recycled(pair64):
    prompt = list(range(10, 30))
    decoder = build_decoder("recycling", pair64.target, fallback=False)
    first = decoder.generate(prompt, 48).stats
    again = decoder.generate(prompt, 48).stats
    assert again.rounds < first.rounds and max(again.emitted_per_round) > 2


def test_the_template_holds_every_prefix_and_is_in_bfs_order():
    parents, ranks, depths = rank_template(8, 8, 48)
    assert len(parents) == 49 and parents[0] == 0 and depths[0] == 0
    assert all(depths[p] == d - 1 and p < i for i, (p, d) in enumerate(zip(parents, depths, strict=True)) if i)
    assert depths == sorted(depths) and max(depths) == 8
    children = {}
    for i in range(1, len(parents)):
        children.setdefault(parents[i], []).append(ranks[i])
    assert all(r == list(range(len(r))) for r in children.values())  # a node's children are its top ranks


@torch.inference_mode()
def test_a_verification_refreshes_the_table_rows_of_the_tokens_it_verified(pair64):
    target, k = pair64.target, 4
    checked = 0
    for prompt in random_prompts(8, seed=11, lengths=(3, 20)):
        decoder = build_decoder("recycling", target, depth=2, branch=k, max_nodes=4)
        out = decoder.generate(prompt, 3)  # the prefill's token, then a round verifying a depth-1 tree from it
        root = out.tokens[0]
        nodes = decoder.tree.tokens[: decoder.tree.size].tolist()
        if root in nodes[1:]:  # another node with the root's token may have written its row last
            continue
        logits = target(input_ids=torch.tensor([[*prompt, root]])).logits[0, -1]
        assert decoder.table[root].tolist() == logits.topk(k).indices.tolist()
        checked += 1
    assert checked >= 4


def test_the_table_learnt_in_warm_up_is_cleared_before_timing(pair64):
    prompts = [Prompt("p", list(range(5, 25)))]
    m = prepare(pair64, "recycling", {"depth": 3, "branch": 2, "max_nodes": 6}, prompts, Protocol(max_new_tokens=8))
    m.decoder.generate(prompts[0].ids, 8)
    assert m.decoder.table.any()
    warm_up(m, pair64, prompts, Protocol(max_new_tokens=8, warmup=1))
    assert not m.decoder.table.any()
