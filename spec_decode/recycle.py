"""The recycled next-token table (Token Recycling, Luo et al., 2024) and the static rank-path template it fills.

The table holds, for every vocabulary token, the top-`branch` next tokens the target last predicted after it; every
verification refreshes the rows of the tokens it verified from the logits it computed anyway (no extra forward).
"""

from __future__ import annotations

import torch

from spec_decode.tree import Level, rank_template, template_ancestors


class RecycleTable:
    """A vocab x `branch` next-token table and a static template of the `nodes` likeliest rank paths up to `depth`.

    Template tensors (BFS order, the root first): `parents`, `ranks`, `depths`, `ancestors`, `order` (each node's
    place among the likeliest-first paths: nodes placed <= k hold every prefix of theirs), `levels` (a `Level` per
    depth).
    """

    def __init__(self, vocab: int, depth: int, branch: int, nodes: int, device: torch.device | str = "cpu"):
        self.branch = branch
        parents, ranks, depths, order = rank_template(depth, branch, nodes, with_order=True)
        self.parents = torch.tensor(parents, device=device)
        self.ranks = torch.tensor(ranks, device=device)
        self.depths = torch.tensor(depths, device=device)
        self.order = torch.tensor(order, device=device)
        self.ancestors = template_ancestors(parents).to(device)
        self.levels = [Level(depths.index(d), len(depths) - depths[::-1].index(d)) for d in range(1, max(depths) + 1)]
        self.table = torch.zeros(vocab, branch, dtype=torch.long, device=device)

    @property
    def nodes(self) -> int:
        """Template nodes, root excluded."""
        return self.parents.numel() - 1

    def clear(self) -> None:
        self.table.zero_()

    def update(self, tokens: torch.Tensor, logits: torch.Tensor) -> None:
        """The rows of `tokens` <- the top-`branch` tokens of their logits (one row of logits per token)."""
        self.table[tokens] = logits.topk(self.branch, dim=-1).indices

    def fill(self, tokens: torch.Tensor, depth: int | None = None) -> None:
        """Fill `tokens` (root at 0, template order) level by level up to `depth`: one gather per level, each node
        its parent's rank-r recycled token."""
        for level in self.levels[:depth]:
            nodes = slice(level.start, level.end)
            tokens[nodes] = self.table[tokens[self.parents[nodes]], self.ranks[nodes]]
