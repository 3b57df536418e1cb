"""Token tree for tree speculation: growth with pruning, tree attention masks, path acceptance.

Nodes are stored flat in BFS order in pre-allocated tensors. Node 0 is the root (the last
committed token, not yet seen by the target); node j > 0 sits at sequence position
`root_position + depth[j]` and, once fed to a model, at cache index `root_index + j`.
`ancestors[i, j]` is True when node j is node i or one of its ancestors, which is exactly the
tree attention pattern: a node attends to the prefix, its ancestors and itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Level:
    """A contiguous run of node indices `[start, end)` added in one growth step."""

    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


def max_tree_nodes(depth: int, branch: int, max_nodes: int) -> int:
    """The most non-root nodes a tree of this shape can hold."""
    full = sum(branch**d for d in range(1, depth + 1)) if branch > 1 else depth
    return max(0, min(full, max_nodes))


class TokenTree:
    """A draft token tree held in tensors sized once for the largest tree a decoder can grow."""

    def __init__(self, capacity: int, device: torch.device | str = "cpu", reserve: int = 0):
        """`capacity` draft nodes (root excluded) plus `reserve` more for grafted chains."""
        size = capacity + reserve + 1
        self.capacity = capacity
        self.tokens = torch.zeros(size, dtype=torch.long, device=device)
        self.parents = torch.zeros(size, dtype=torch.long, device=device)
        self.depth = torch.zeros(size, dtype=torch.long, device=device)
        self.probs = torch.ones(size, dtype=torch.float32, device=device)
        self.log_path_prob = torch.zeros(size, dtype=torch.float32, device=device)
        self.ancestors = torch.zeros(size, size, dtype=torch.bool, device=device)
        self.size = 1
        self.pruned: list[dict] | None = None  # set to a list to record the children pruning dropped

    def reset(self, root_token: torch.Tensor) -> Level:
        """Start a new tree whose only node is `root_token`."""
        self.tokens[0] = root_token
        self.ancestors[0].zero_()
        self.ancestors[0, 0] = True
        self.size = 1
        return Level(0, 1)

    def grow(
        self, parents: Level, logits: torch.Tensor, branch: int, threshold: float
    ) -> Level:
        """Add the top-`branch` children of every node in `parents` whose draft probability >= `threshold`.

        `logits` holds one row of draft logits per parent. When the candidates exceed the remaining
        capacity, those with the highest path probability are kept.
        """
        probs = logits.float().softmax(-1)
        top_p, top_tokens = probs.topk(branch, dim=-1)
        parent_ids = torch.arange(parents.start, parents.end, device=probs.device)[:, None].expand_as(top_tokens)
        keep = top_p >= threshold
        if self.pruned is not None:
            self._record_pruned(parent_ids[~keep], top_tokens[~keep], top_p[~keep])
        cand_p, cand_tokens, cand_parents = top_p[keep], top_tokens[keep], parent_ids[keep]
        cand_logp = self.log_path_prob[cand_parents] + cand_p.log()
        room = self.capacity + 1 - self.size
        if cand_tokens.numel() > room:
            best = cand_logp.topk(room).indices.sort().values
            if self.pruned is not None:
                cut = torch.ones_like(cand_p, dtype=torch.bool).index_fill_(0, best, False)
                self._record_pruned(cand_parents[cut], cand_tokens[cut], cand_p[cut])
            cand_p, cand_tokens, cand_parents, cand_logp = (
                cand_p[best], cand_tokens[best], cand_parents[best], cand_logp[best]
            )
        return self._append(cand_tokens, cand_parents, cand_p, cand_logp)

    def graft(self, chain: torch.Tensor) -> Level:
        """Add a token chain from the root, sharing the longest prefix the tree already holds."""
        n = self.size
        depth = self.depth[:n]
        on_chain = torch.zeros(n, dtype=torch.bool, device=chain.device)
        inside = (depth >= 1) & (depth <= chain.numel())
        on_chain[inside] = self.tokens[:n][inside] == chain[depth[inside] - 1]
        on_chain[0] = True
        matches = ~(self.ancestors[:n, :n] & ~on_chain).any(-1)
        deepest = (depth * matches).argmax()
        shared = int(depth[deepest])
        rest = chain[shared : shared + self.tokens.numel() - n]
        start, end = n, n + rest.numel()
        new = torch.arange(start, end, device=chain.device)
        self.tokens[start:end] = rest
        self.parents[start:end] = torch.cat([deepest[None], new[:-1]])
        self.depth[start:end] = shared + 1 + torch.arange(rest.numel(), device=chain.device)
        self.probs[start:end] = 1.0  # lookup nodes come from the context, not from the draft
        self.log_path_prob[start:end] = self.log_path_prob[deepest]
        self.ancestors[start:end] = self.ancestors[deepest]
        self.ancestors[start:end, start:end] = torch.ones(rest.numel(), rest.numel(), dtype=torch.bool,
                                                          device=chain.device).tril_()
        self.size = end
        return Level(start, end)

    def _record_pruned(self, parents: torch.Tensor, tokens: torch.Tensor, probs: torch.Tensor) -> None:
        self.pruned += [{"parent": p, "token": t, "prob": q}
                        for p, t, q in zip(parents.tolist(), tokens.tolist(), probs.tolist(), strict=True)]

    def snapshot(self) -> dict:
        """The tree as plain lists (for traces): tokens, parents (root: -1), depths, draft probabilities."""
        n = self.size
        parents = self.parents[:n].tolist()
        parents[0] = -1
        return {"token": self.tokens[:n].tolist(), "parent": parents, "depth": self.depth[:n].tolist(),
                "prob": self.probs[:n].tolist(), "pruned": list(self.pruned or [])}

    def _append(self, tokens: torch.Tensor, parents: torch.Tensor, probs: torch.Tensor,
                logp: torch.Tensor) -> Level:
        start, end = self.size, self.size + tokens.numel()
        new = slice(start, end)
        self.tokens[new] = tokens
        self.parents[new] = parents
        self.depth[new] = self.depth[parents] + 1
        self.probs[new] = probs
        self.log_path_prob[new] = logp
        self.ancestors[new] = self.ancestors[parents]
        index = torch.arange(start, end, device=tokens.device)
        self.ancestors[index, index] = True
        self.size = end
        return Level(start, end)

    def block(self, rows: Level, first_node: int) -> torch.Tensor:
        """Bool `(rows, rows.end - first_node)`: which of nodes `[first_node, rows.end)` each row attends to.

        The target sees the root as a query (`first_node=0`); the draft already holds it (`first_node=1`).
        """
        return self.ancestors[rows.start : rows.end, first_node : rows.end]

    def accept(self, target_next: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Longest root path whose tokens all equal the target's greedy choice, and the bonus token.

        `target_next[i]` is the target's argmax after node i. Returns the path's node indices
        (ascending, root first) and the target's token after the path's last node.
        """
        n = self.size
        correct = self.tokens[1:n] == target_next[self.parents[1:n]]
        wrong = torch.cat([correct.new_zeros(1), ~correct])
        on_good_path = ~(self.ancestors[:n, :n] & wrong).any(-1)
        best = (self.depth[:n] * on_good_path).argmax()
        path = self.ancestors[best, :n].nonzero().squeeze(1)
        return path, target_next[best]
