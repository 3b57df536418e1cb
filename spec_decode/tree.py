"""Token tree for tree speculation: growth with pruning, tree attention masks, path acceptance.

Nodes are stored flat in BFS order in pre-allocated tensors. Node 0 is the root (the last
committed token, not yet seen by the target); node j > 0 sits at sequence position
`root_position + depth[j]` and, once fed to a model, at cache index `root_index + j`.
`ancestors[i, j]` is True when node j is node i or one of its ancestors, which is exactly the
tree attention pattern: a node attends to the prefix, its ancestors and itself.

Growth needs no host sync: every level takes a fixed number of slots (the most nodes it could keep, known
from the shape alone), its live nodes first; candidates that pruning drops stay in their slots as dead nodes
(`live` False). Where the level's live count reaches the host without blocking (always on CPU), `trim` drops
its dead slots before the draft sees the level; otherwise they are fed along. They are never verified: `compact`
moves the live nodes to the front, in BFS order, with the tree's one host read (its live size); `slot` then
maps each node back to the slot the draft cache holds it in.
"""

from __future__ import annotations

import heapq
import math
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


def template_ancestors(parents: list[int]) -> torch.Tensor:
    """The ancestor matrix (node i: itself and its ancestors) of a tree given by its parents, parents first."""
    ancestors = torch.eye(len(parents), dtype=torch.bool)
    for i in range(1, len(parents)):  # once per template, not per round
        ancestors[i] |= ancestors[parents[i]]
    return ancestors


def max_tree_nodes(depth: int, branch: int, max_nodes: int) -> int:
    """The most non-root nodes a tree of this shape can hold."""
    full = sum(branch**d for d in range(1, depth + 1)) if branch > 1 else depth
    return max(0, min(full, max_nodes))


def level_slots(depth: int, branch: int, capacity: int) -> list[int]:
    """Slots of each level: the most nodes level d can keep, min(branch * slots of d-1, capacity - (d-1))."""
    widths, previous = [], 1
    for d in range(1, depth + 1):
        previous = min(branch * previous, capacity - (d - 1))
        if previous <= 0:
            break
        widths.append(previous)
    return widths


def rank_template(depth: int, branch: int, nodes: int, with_order: bool = False) -> tuple[list[int], ...]:
    """A static tree of the `nodes` likeliest rank paths (ranks < `branch`, length <= `depth`), a path of ranks
    r1..rd scored prod 0.6/(r+1)^2 (a prior: the top candidate is accepted most, lower ranks fall off fast; 48 nodes
    reach depth 8 along rank 0): parents, ranks and depths in BFS order, the root first. A child scores below its
    parent, so the chosen paths hold every prefix of theirs. `with_order` adds each node's place in likeliest-first
    order (root 0): the nodes placed <= k form a tree of the k likeliest paths."""
    def score(path: tuple[int, ...]) -> float:
        return math.prod(0.6 / (rank + 1) ** 2 for rank in path)

    frontier = [(-score((rank,)), (rank,)) for rank in range(branch)]
    heapq.heapify(frontier)
    paths = []
    while frontier and len(paths) < nodes:
        _, path = heapq.heappop(frontier)
        paths.append(path)
        if len(path) < depth:
            for rank in range(branch):
                heapq.heappush(frontier, (-score((*path, rank)), (*path, rank)))
    popped = {path: i + 1 for i, path in enumerate(paths)}
    paths.sort(key=lambda path: (len(path), path))
    index = {(): 0} | {path: i + 1 for i, path in enumerate(paths)}
    shape = ([0] + [index[path[:-1]] for path in paths], [0] + [path[-1] for path in paths],
             [0] + [len(path) for path in paths])
    return (*shape, [0] + [popped[path] for path in paths]) if with_order else shape


class TokenTree:
    """A draft token tree held in tensors sized once for the largest tree a decoder can grow."""

    def __init__(self, capacity: int, device: torch.device | str = "cpu", reserve: int = 0,
                 slots: int | None = None):
        """At most `capacity` live draft nodes (root excluded) in `slots` growth slots, plus `reserve` for a chain."""
        self.capacity, self.slots = capacity, capacity if slots is None else slots
        size = self.slots + reserve + 1
        self.tokens = torch.zeros(size, dtype=torch.long, device=device)
        self.parents = torch.zeros(size, dtype=torch.long, device=device)
        self.depth = torch.zeros(size, dtype=torch.long, device=device)
        self.probs = torch.ones(size, dtype=torch.float32, device=device)
        self.log_path_prob = torch.zeros(size, dtype=torch.float32, device=device)
        self.live = torch.zeros(size, dtype=torch.bool, device=device)
        self.slot = torch.arange(size, device=device)
        self.ancestors = torch.zeros(size, size, dtype=torch.bool, device=device)
        self.size = 1
        self.levels = 0
        self.budget = capacity  # live draft nodes this tree may grow (<= capacity), set per tree by `reset`
        self.pruned: list[dict] | None = None  # set to a list to record the children pruning dropped
        self._pruned_slots: list[tuple[torch.Tensor, ...]] = []

    def reset(self, root_token: torch.Tensor, budget: int | None = None) -> Level:
        """Start a new tree whose only node is `root_token`; growth keeps at most `budget` live nodes (capacity)."""
        self.budget = self.capacity if budget is None else min(budget, self.capacity)
        self.tokens[0] = root_token
        self.ancestors[0].zero_()
        self.ancestors[0, 0] = True
        self.live[0] = True
        self.size, self.levels = 1, 0
        self._pruned_slots = []
        return Level(0, 1)

    def grow(self, parents: Level, logits: torch.Tensor, branch: int, threshold: float,
             allow: torch.Tensor | None = None) -> Level:
        """Add the top-`branch` children of every live node in `parents` whose draft probability >= `threshold`.

        `logits` holds one row of draft logits per parent. When the candidates exceed the remaining
        capacity, those with the highest path probability are kept. `allow` (a bool scalar) False kills the level.
        """
        width = min(branch * parents.size, self.capacity - self.levels)
        if width > self.slots + 1 - self.size:
            raise ValueError(f"no slots left for a level of {width} nodes (built with slots={self.slots})")
        self.levels += 1
        if width <= 0:
            return Level(self.size, self.size)
        top_p, top_tokens = logits.float().softmax(-1).topk(branch, dim=-1)
        top_p, top_tokens = top_p.reshape(-1), top_tokens.reshape(-1)
        cand_parents = torch.arange(parents.start, parents.end, device=top_p.device)[:, None].expand(-1, branch)
        cand_parents = cand_parents.reshape(-1)
        grown = self.live[cand_parents] if allow is None else self.live[cand_parents] & allow
        cand_logp = self.log_path_prob[cand_parents] + top_p.log()
        passing = grown & (top_p >= threshold) & (top_p > 0)  # a zero: cut by top-k / top-p (sampling)
        keep, room = passing, self.budget + 1 - self.live[: self.size].sum()
        if self.budget + 1 - self.size < top_p.numel():  # the node cap may bind (slots used bound live nodes)
            order = torch.sort(torch.where(passing, cand_logp, -torch.inf), descending=True, stable=True).indices
            rank = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel(), device=order.device))
            keep = passing & (rank < room)
        if self.pruned is not None:
            self._pruned_slots.append((cand_parents, top_tokens, top_p, grown & (room > 0) & ~keep))
        pick = torch.sort(torch.where(keep, 0, 1), stable=True).indices[:width]  # kept first, in candidate order
        return self._append(top_tokens[pick], cand_parents[pick], top_p[pick], cand_logp[pick], keep[pick])

    def stalled(self, level: Level) -> torch.Tensor:
        """Bool scalar: growth cannot go on (the level holds no live node, or the tree is full)."""
        return ~self.live[level.start : level.end].any() | (self.live[: self.size].sum() > self.budget)

    def trim(self, level: Level, live: int) -> Level:
        """Drop the newest level's dead slots, given how many of its nodes live (they come first)."""
        self.size = level.start + live
        return Level(level.start, self.size)

    def graft(self, chain: torch.Tensor, count: torch.Tensor | int | None = None) -> Level:
        """Add the first `count` tokens of `chain` from the root, sharing the longest prefix the tree already holds.

        Takes `chain.numel()` slots (fewer if the reserve is short); the shared prefix's slots stay dead.
        """
        n, device = self.size, chain.device
        length = min(chain.numel(), self.tokens.numel() - n)
        if length == 0:
            return Level(n, n)
        count = torch.as_tensor(chain.numel() if count is None else count, device=device).clamp(max=length)
        depth = self.depth[:n]
        inside = (depth >= 1) & (depth <= count)
        on_chain = inside & self.live[:n] & (self.tokens[:n] == chain[(depth - 1).clamp(0, length - 1)])
        on_chain[0] = True
        matches = ~(self.ancestors[:n, :n] & ~on_chain).any(-1)
        deepest = (depth * matches).argmax()[None]
        shared = depth[deepest]
        step = torch.arange(length, device=device)
        start, end = n, n + length
        self.tokens[start:end] = chain[:length]
        self.parents[start:end] = torch.where(step == shared, deepest, step + start - 1)
        self.depth[start:end] = step + 1
        self.probs[start:end] = 1.0  # lookup nodes come from the context, not from the draft
        self.log_path_prob[start:end] = self.log_path_prob[deepest]
        self.live[start:end] = (step >= shared) & (step < count)
        self.ancestors[start:end] = self.ancestors[deepest]
        self.ancestors[start:end, start:end] = (step[:, None] >= step[None, :]) & (step[None, :] >= shared)
        self.size = end
        return Level(start, end)

    def graft_all(self, chains: torch.Tensor, counts: torch.Tensor) -> None:
        """Graft every row of `chains` (its first `counts[i]` tokens) in turn: rows sharing a prefix share its nodes."""
        for chain, count in zip(chains, counts, strict=True):
            self.graft(chain, count)

    def append_template(self, tokens: torch.Tensor, parents: torch.Tensor, ancestors: torch.Tensor,
                        live: torch.Tensor | None = None) -> Level:
        """Hang a template subtree from the root: template nodes 1..T (`tokens`, `parents`, `ancestors` indexed with
        the template's root at 0, parents before children) take the next T slots; `live` (bool, T + 1) keeps some.

        Nodes may duplicate ones the tree holds (verification does not need them unique). Tensor ops only.
        """
        start, count = self.size, tokens.numel() - 1
        end = start + count
        if end > self.tokens.numel():
            raise ValueError(f"no room for a template of {count} nodes ({self.tokens.numel() - start} slots left)")
        new = slice(start, end)
        self.tokens[new] = tokens[1:]
        self.parents[new] = torch.where(parents[1:] == 0, 0, parents[1:] + start - 1)
        self.depth[new] = ancestors[1:].sum(-1) - 1
        self.probs[new] = 1.0  # recycled nodes come from past verifications, not from the draft
        self.log_path_prob[new] = 0.0
        self.live[new] = True if live is None else live[1:]
        self.ancestors[new] = False
        self.ancestors[new, 0] = True
        self.ancestors[new, new] = ancestors[1:, 1:]
        self.size = end
        return Level(start, end)

    def compact(self, live_count: int | None = None) -> int:
        """Move the live nodes to the front (BFS order kept) and return their number: growth's one host read
        (`live_count`: that number, already read, e.g. with other trees' in one read)."""
        used = self.size
        live = self.live[:used]
        order = torch.sort((~live).to(torch.uint8), stable=True).indices
        rank = live.cumsum(0) - 1
        n = int(live.sum()) if live_count is None else live_count
        keep = order[:n]
        self.tokens[:n], self.depth[:n] = self.tokens[keep], self.depth[keep]
        self.probs[:n], self.log_path_prob[:n] = self.probs[keep], self.log_path_prob[keep]
        self.parents[:n] = rank[self.parents[keep]]
        self.ancestors[:n, :n] = self.ancestors[keep][:, keep]
        self.slot[:n] = keep
        self.live[:n] = True
        self.size = n
        if self.pruned is not None:
            self._record_pruned(rank)
        return n

    def _record_pruned(self, rank: torch.Tensor) -> None:
        for parents, tokens, probs, dropped in self._pruned_slots:
            self.pruned += [{"parent": p, "token": t, "prob": q} for p, t, q in
                            zip(rank[parents[dropped]].tolist(), tokens[dropped].tolist(), probs[dropped].tolist(),
                                strict=True)]

    def snapshot(self) -> dict:
        """The tree as plain lists (for traces): tokens, parents (root: -1), depths, draft probabilities."""
        n = self.size
        parents = self.parents[:n].tolist()
        parents[0] = -1
        return {"token": self.tokens[:n].tolist(), "parent": parents, "depth": self.depth[:n].tolist(),
                "prob": self.probs[:n].tolist(), "pruned": list(self.pruned or [])}

    def _append(self, tokens: torch.Tensor, parents: torch.Tensor, probs: torch.Tensor, logp: torch.Tensor,
                live: torch.Tensor) -> Level:
        start, end = self.size, self.size + tokens.numel()
        new = slice(start, end)
        self.tokens[new] = tokens
        self.parents[new] = parents
        self.depth[new] = self.depth[parents] + 1
        self.probs[new] = probs
        self.log_path_prob[new] = logp
        self.live[new] = live
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

    def nodes_upto(self, levels: int) -> torch.Tensor:
        """Nodes (root excluded) at depth <= d, for d < `levels`, of a compacted tree (counts a round cut by EOS)."""
        depth = self.depth[1 : self.size]
        per_depth = torch.zeros(levels, dtype=torch.long, device=depth.device)
        return per_depth.scatter_add_(0, depth.clamp(max=levels - 1), torch.ones_like(depth)).cumsum(0)

    def agreeing(self, target_next: torch.Tensor) -> torch.Tensor:
        """Bool per node of a compacted tree: its root path's tokens all equal the target's greedy choices."""
        n = self.size
        correct = self.tokens[1:n] == target_next[self.parents[1:n]]
        wrong = torch.cat([correct.new_zeros(1), ~correct])
        return ~(self.ancestors[:n, :n] & wrong).any(-1)

    def accept(self, target_next: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Longest root path whose tokens all equal the target's greedy choice: (path, length, bonus token).

        `target_next[i]` is the target's argmax after node i (of a compacted tree). `path[: length + 1]` holds
        the path's node indices (root first; `path` is padded to the tree's size); `bonus` is the target's token
        after the path's last node. All three stay on the device.
        """
        n = self.size
        on_good_path = self.agreeing(target_next)
        best = (self.depth[:n] * on_good_path).argmax()[None]  # 1-d: indexing with it reads nothing to the host
        index = torch.where(self.ancestors[best, :n][0], self.depth[:n], n)  # an ancestor's place is its depth
        path = torch.zeros(n + 1, dtype=torch.long, device=index.device)
        path.scatter_(0, index, torch.arange(n, device=index.device))
        return path[:n], self.depth[best][0], target_next[best][0]

    def emitted(self, path: torch.Tensor, accepted: torch.Tensor, bonus: torch.Tensor) -> torch.Tensor:
        """The round's tokens on the device: the accepted path's tokens, the bonus at index `accepted` (padded)."""
        return torch.cat([self.tokens[path[1:]], bonus[None]]).scatter_(0, accepted[None], bonus[None])
