"""Tree speculative decoding with dynamic pruning: one batched draft forward per level, one target verify."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from spec_decode import kv
from spec_decode.decoders.base import GenerationStats, check_streaming
from spec_decode.decoders.speculative import SpeculativeDecoder
from spec_decode.lookup import ngram_continuation
from spec_decode.tree import Level, TokenTree, max_tree_nodes


class TreeDecoder(SpeculativeDecoder):
    """Grow a token tree (depth D, branch B, threshold tau, node cap), verify it in one target forward.

    A child is kept when its draft probability given its parent is >= `threshold`; when a level would
    pass `max_nodes` (root excluded), the candidates with the highest path probability are kept.
    With `lookup` > 0 the tree also holds a chain of up to `lookup` tokens continuing the latest earlier
    occurrence of the context's last n-gram (n <= `ngram`), verified in the same target forward; with
    `lookup_first`, a round whose chain starts with the draft's top choice grows no deeper draft levels
    (the text is repeating itself: the chain is likelier than the draft and costs no draft forwards).
    """

    name = "tree"
    trace_rounds = 0  # record the first N rounds' trees (nodes, pruned children, target verdicts, accepted path)

    def __init__(self, target: PreTrainedModel, draft: PreTrainedModel, depth: int, branch: int,
                 threshold: float = 0.0, max_nodes: int = 1_000_000, lookup: int = 0, ngram: int = 3,
                 lookup_first: bool = False, cache_size: int | None = None, sink: int = 4):
        super().__init__(target, draft, cache_size, sink)
        self.validate(depth, branch, threshold, max_nodes, lookup, ngram, lookup_first, cache_size, sink)
        self.depth, self.branch, self.threshold, self.max_nodes = depth, branch, threshold, max_nodes
        self.lookup, self.ngram, self.lookup_first = lookup, ngram, lookup_first
        self.tree = TokenTree(max_tree_nodes(depth, branch, max_nodes), self.device, reserve=lookup)

    @property
    def lookahead(self) -> int:
        return self.tree.tokens.numel()

    @staticmethod
    def validate(depth: int, branch: int, threshold: float = 0.0, max_nodes: int = 1_000_000, lookup: int = 0,
                 ngram: int = 3, lookup_first: bool = False, cache_size: int | None = None, sink: int = 4) -> None:
        """Raise ValueError for knobs outside their range."""
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if branch < 1:
            raise ValueError(f"branch must be >= 1, got {branch}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if max_nodes < 1:
            raise ValueError(f"max_nodes must be >= 1, got {max_nodes}")
        if lookup < 0 or ngram < 1:
            raise ValueError(f"lookup must be >= 0 and ngram >= 1, got {lookup} and {ngram}")
        if not isinstance(lookup_first, bool):
            raise ValueError(f"lookup_first must be true or false, got {lookup_first!r}")
        nodes = max_tree_nodes(depth, branch, max_nodes) + lookup
        check_streaming(cache_size, sink, lookahead=nodes + 1, needed=max(depth, lookup) + 1)

    def params(self) -> dict:
        lookup = {"lookup": self.lookup, "ngram": self.ngram, "lookup_first": self.lookup_first} if self.lookup else {}
        return {"depth": self.depth, "branch": self.branch, "threshold": self.threshold,
                "max_nodes": self.max_nodes} | lookup | super().params()

    def _round(self, remaining: int, stats: GenerationStats) -> list[int]:
        depth = min(self.depth, remaining - 1)
        if depth == 0:
            stats.tree_nodes_per_round.append(0)
            return self._target_step(stats)
        tracing = len(stats.trace) < self.trace_rounds
        self.tree.pruned = [] if tracing else None
        chain = None
        if self.lookup:
            chain = ngram_continuation(self.committed[: self.length], self.ngram, min(self.lookup, remaining - 1))
        fed = self._grow(depth, stats, chain if self.lookup_first else None)
        if chain is not None:
            self.tree.graft(chain)
        path, bonus, target_next = self._verify(stats)
        if tracing:
            stats.trace.append(self.tree.snapshot() | {"target_next": target_next[: self.tree.size].tolist(),
                                                       "accepted": path.tolist(), "bonus": int(bonus)})
        self._keep(path, fed)
        emitted = torch.cat([self.tree.tokens[path[1:]], bonus[None]])
        self._commit(emitted)
        stats.drafted_per_round.append(self.tree.size - 1)
        stats.accepted_per_round.append(path.numel() - 1)
        stats.tree_nodes_per_round.append(self.tree.size - 1)
        return emitted.tolist()

    def _grow(self, depth: int, stats: GenerationStats, chain: torch.Tensor | None = None) -> int:
        """Grow the tree level by level; return how many non-root nodes were fed to the draft.

        Stops after the first level when `chain` (a lookup chain) starts with the draft's top choice.
        """
        tree, root = self.tree, self.length - 1
        level = tree.reset(self.committed[root])
        logits = self._draft_catch_up(stats)[None]
        fed = 0
        for d in range(1, depth + 1):
            level = tree.grow(level, logits, self.branch, self.threshold)
            if d == depth or level.size == 0 or tree.size > tree.capacity:
                break
            if d == 1 and chain is not None and chain.numel() and bool(chain[0] == tree.tokens[level.start]):
                break
            logits = self._draft_level(level, d, stats)
            fed = level.end - 1
        return fed

    def _draft_level(self, level: Level, depth: int, stats: GenerationStats) -> torch.Tensor:
        """One batched draft forward over a whole level, under the tree mask."""
        tree, base = self.tree, self.length
        nodes = slice(level.start, level.end)
        positions = torch.full((level.size,), base - 1 + depth, device=self.device)
        stats.draft_forwards += 1
        return self._feed(self.draft, self.draft_cache, tree.tokens[nodes], base, positions, tree.block(level, 1))

    def _verify(self, stats: GenerationStats) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One target forward over the flattened tree; the accepted path, the bonus token, the target's argmax."""
        tree, past = self.tree, self.length - 1
        whole = Level(0, tree.size)
        positions = past + tree.depth[: tree.size]
        logits = self._feed(self.target, self.target_cache, tree.tokens[: tree.size], past, positions,
                            tree.block(whole, 0))
        stats.target_forwards += 1
        target_next = logits.argmax(-1)
        return *tree.accept(target_next), target_next

    def _keep(self, path: torch.Tensor, fed: int) -> None:
        """Gather the accepted path's KV entries into place in both caches."""
        root = self.length - 1
        kv.keep_path(self.target_cache, root, path)
        kv.keep_path(self.draft_cache, root, path[path <= fed])

