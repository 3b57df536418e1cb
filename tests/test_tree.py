"""Token tree: growth with pruning, the tree attention mask, path acceptance."""

from __future__ import annotations

import pytest
import torch

from spec_decode.kv import additive_mask
from spec_decode.tree import Level, TokenTree, level_slots, max_tree_nodes

NEG = torch.finfo(torch.float32).min


def logits_for(rows: list[dict[int, float]], vocab: int = 10) -> torch.Tensor:
    """Logits whose softmax puts the given probabilities on the given tokens (rest spread evenly)."""
    out = torch.empty(len(rows), vocab)
    for i, probs in enumerate(rows):
        rest = (1.0 - sum(probs.values())) / (vocab - len(probs))
        p = torch.full((vocab,), rest)
        for token, value in probs.items():
            p[token] = value
        out[i] = p.log()
    return out


def with_prefix(block: torch.Tensor, prefix: int) -> torch.Tensor:
    """The additive mask of a tree block after `prefix` fully visible positions."""
    return additive_mask(torch.cat([torch.ones(block.shape[0], prefix, dtype=torch.bool), block], 1), torch.float32)


def example_tree() -> TokenTree:
    """Root 0 with children 1, 2; node 1 with children 3, 4; node 2 with the single child 5."""
    tree = TokenTree(capacity=20)
    root = tree.reset(torch.tensor(9))
    level1 = tree.grow(root, logits_for([{1: 0.6, 2: 0.3}]), branch=2, threshold=0.1)
    tree.grow(level1, logits_for([{3: 0.5, 4: 0.4}, {5: 0.9, 6: 0.05}]), branch=2, threshold=0.1)
    assert tree.size == 7 and tree.live[:7].tolist() == [True] * 6 + [False]  # token 6 pruned: a dead slot
    assert tree.compact() == 6
    return tree


def accept(tree: TokenTree, target_next: list[int]) -> tuple[list[int], int]:
    """The accepted path's nodes and the bonus token, as plain values."""
    path, length, bonus = tree.accept(torch.tensor(target_next))
    return path[: int(length) + 1].tolist(), int(bonus)


def test_example_tree_shape_and_pruning():
    tree = example_tree()
    assert tree.size == 6
    assert tree.tokens[:6].tolist() == [9, 1, 2, 3, 4, 5]
    assert tree.parents[1:6].tolist() == [0, 0, 1, 1, 2]
    assert tree.depth[:6].tolist() == [0, 1, 1, 2, 2, 2]


def test_mask_node_sees_prefix_ancestors_and_itself_only():
    tree = example_tree()
    mask = with_prefix(tree.block(Level(0, 6), first_node=0), 3)
    assert mask.shape == (1, 1, 6, 9)
    visible = (mask[0, 0] == 0).int()
    # node 4 sees the 3 prefix positions, nodes 0 and 1, and itself
    assert visible[4].tolist() == [1, 1, 1, 1, 1, 0, 0, 1, 0]
    assert visible[5].tolist() == [1, 1, 1, 1, 0, 1, 0, 0, 1]
    assert visible[0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert set(mask.unique().tolist()) == {0.0, NEG}


def test_draft_mask_excludes_root_column():
    """The draft already holds the root in its cache, so its mask starts at node 1."""
    tree = example_tree()
    mask = with_prefix(tree.block(Level(3, 6), first_node=1), 4)
    assert mask.shape == (1, 1, 3, 4 + 5)
    assert (mask[0, 0] == 0).int().tolist() == [
        [1, 1, 1, 1, 1, 0, 1, 0, 0],
        [1, 1, 1, 1, 1, 0, 0, 1, 0],
        [1, 1, 1, 1, 0, 1, 0, 0, 1],
    ]


def test_accept_longest_agreeing_path_and_bonus():
    tree = example_tree()
    # target after root says 2 (node 2), after node 2 says 5 (node 5), after node 5 says 7
    assert accept(tree, [2, 0, 5, 0, 0, 7]) == ([0, 2, 5], 7)


def test_accept_nothing_returns_root_and_target_token():
    tree = example_tree()
    assert accept(tree, [8, 3, 5, 0, 0, 0]) == ([0], 8)


def test_accept_ignores_correct_child_of_wrong_parent():
    tree = example_tree()
    # node 3 matches target after node 1, but node 1 itself is wrong (target after root is 2)
    assert accept(tree, [2, 3, 6, 0, 0, 0]) == ([0, 2], 6)


@pytest.mark.parametrize("threshold", [0.0, 0.02, 0.1, 0.3])
@pytest.mark.parametrize("max_nodes", [1, 5, 30, 1000])
def test_pruning_and_node_cap_hold_on_random_logits(threshold, max_nodes):
    gen = torch.Generator().manual_seed(int(threshold * 100) + max_nodes)
    depth, branch = 5, 3
    capacity = max_tree_nodes(depth, branch, max_nodes)
    tree = TokenTree(capacity, slots=sum(level_slots(depth, branch, capacity)))
    level = tree.reset(torch.tensor(0))
    for _ in range(depth):
        logits = torch.randn(level.size, 50, generator=gen) * 3
        level = tree.grow(level, logits, branch, threshold)
        if level.size == 0:
            break
    n = tree.compact()
    assert n - 1 <= max_nodes
    assert bool((tree.probs[1:n] >= threshold).all())
    assert int(tree.depth[:n].max()) <= depth
    # every child's probability is its parent's draft probability, so path products are consistent
    assert torch.allclose(tree.log_path_prob[1:n], tree.log_path_prob[tree.parents[1:n]] + tree.probs[1:n].log())


def test_threshold_one_prunes_everything():
    tree = TokenTree(10)
    level = tree.reset(torch.tensor(0))
    assert not tree.live[tree.grow(level, torch.randn(1, 20), branch=3, threshold=1.0).start :].any()
    assert tree.compact() == 1 and tree.size == 1


def test_max_tree_nodes():
    assert max_tree_nodes(3, 2, 100) == 14
    assert max_tree_nodes(8, 1, 100) == 8
    assert max_tree_nodes(8, 3, 50) == 50


def test_graft_shares_the_existing_prefix_and_adds_a_chain():
    tree = example_tree()  # root 9; 1 -> (3, 4); 2 -> 5
    level = tree.graft(torch.tensor([2, 5, 7, 8]))
    assert (level.start, level.end) == (6, 10)  # a slot per chain token; the shared prefix's stay dead
    assert tree.live[6:10].tolist() == [False, False, True, True]
    assert tree.compact() == 8
    assert tree.parents[6:8].tolist() == [5, 6]
    assert tree.depth[6:8].tolist() == [3, 4]
    visible = tree.block(Level(0, 8), 0)
    assert visible[7].nonzero().squeeze(1).tolist() == [0, 2, 5, 6, 7]
    assert accept(tree, [2, 0, 5, 0, 0, 7, 8, 4]) == ([0, 2, 5, 6, 7], 4)


def test_graft_new_branch_from_root_and_respects_room():
    tree = TokenTree(capacity=2, reserve=2)
    tree.reset(torch.tensor(0))
    tree.grow(Level(0, 1), logits_for([{1: 0.6, 2: 0.3}]), branch=2, threshold=0.1)
    level = tree.graft(torch.tensor([6, 7, 8, 9]))
    assert level.size == 2 and tree.compact() == 5 and tree.parents[3:5].tolist() == [0, 3]
    assert tree.graft(torch.tensor([5])).size == 0


def test_graft_keeps_only_the_first_count_tokens_live():
    tree = example_tree()  # root 9; 1 -> (3, 4); 2 -> 5
    level = tree.graft(torch.tensor([2, 5, 7, 8, 4]), count=torch.tensor(3))
    assert level.size == 5 and tree.live[level.start : level.end].tolist() == [False, False, True, False, False]
    assert tree.compact() == 7 and tree.parents[6] == 5 and tree.depth[6] == 3


def test_cap_keeps_the_highest_path_probabilities_in_bfs_order():
    tree = TokenTree(capacity=3, slots=sum(level_slots(2, 2, 3)))
    level = tree.reset(torch.tensor(0))
    level = tree.grow(level, logits_for([{1: 0.5, 2: 0.4}]), branch=2, threshold=0.0)
    # path probabilities: 0.5*0.3 (3), 0.5*0.25 (4), 0.4*0.45 (5), 0.4*0.1 (6); one node of room left
    tree.grow(level, logits_for([{3: 0.3, 4: 0.25}, {5: 0.45, 6: 0.1}]), branch=2, threshold=0.0)
    assert tree.compact() == 4
    assert tree.tokens[:4].tolist() == [0, 1, 2, 5] and tree.parents[1:4].tolist() == [0, 0, 2]
