"""Token Recycling (Luo et al., 2024): draft-free trees from a table of each token's likeliest next tokens.

The table (spec_decode/recycle.py) holds, for every vocabulary token, the top-`branch` next tokens the target last
predicted after it, refreshed from every verification's logits. A round fills a static tree template from the table
(one gather per level) and verifies it in one target forward.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from spec_decode import kv
from spec_decode.decoders.base import Decoder, GenerationStats, Round, check_flag, finite
from spec_decode.recycle import RecycleTable
from spec_decode.tree import TokenTree


class RecyclingDecoder(Decoder):
    """Tree speculation without a draft model: the tree's tokens come from the recycled next-token table.

    `depth`, `branch` (ranks per node) and `max_nodes` shape the static template (the `max_nodes` likeliest rank
    paths); `keep_table`: the table carries over between generations (after the benchmark's warm-up it is cleared,
    so no timed prompt profits from having been decoded before).
    """

    name = "recycling"
    counts_nodes = True

    def __init__(self, target: PreTrainedModel, depth: int = 8, branch: int = 8, max_nodes: int = 48,
                 keep_table: bool = True, fallback: bool = True):
        self.validate(depth, branch, max_nodes, keep_table, fallback)
        super().__init__(target)
        self.depth, self.branch, self.max_nodes, self.keep_table = depth, branch, max_nodes, keep_table
        self.fallback = fallback
        self.recycled = RecycleTable(target.config.vocab_size, depth, branch, max_nodes, self.device)
        self.tree = TokenTree(self.recycled.nodes, self.device)
        self.tree.reset(torch.zeros((), dtype=torch.long))
        self.tree.append_template(torch.zeros_like(self.recycled.parents), self.recycled.parents,
                                  self.recycled.ancestors)
        self._upto = [level.end - 1 for level in self.recycled.levels]  # nodes (root excluded) at depth <= d

    @property
    def table(self) -> torch.Tensor:
        return self.recycled.table

    @staticmethod
    def validate(depth: int = 8, branch: int = 8, max_nodes: int = 48, keep_table: bool = True,
                 fallback: bool = True) -> None:
        """Raise ValueError for knobs outside their range."""
        if depth < 1 or branch < 1 or max_nodes < 1:
            raise ValueError(f"depth, branch and max_nodes must be >= 1, got {depth}, {branch}, {max_nodes}")
        check_flag("keep_table", keep_table)
        check_flag("fallback", fallback)

    def params(self) -> dict:
        return {"depth": self.depth, "branch": self.branch, "max_nodes": self.max_nodes,
                "template_nodes": self.tree.capacity, "keep_table": self.keep_table, "fallback": self.fallback}

    @property
    def lookahead(self) -> int:
        return self.tree.capacity + 1

    def reset_state(self) -> None:
        """Forget the table (the benchmark calls this after warm-up)."""
        super().reset_state()
        self.recycled.clear()

    def _begin(self, prompt: torch.Tensor, max_new_tokens: int) -> None:
        super()._begin(prompt, max_new_tokens)
        if not self.keep_table:
            self.recycled.clear()

    def _prefilled(self, ids: torch.Tensor, logits: torch.Tensor) -> None:
        """The prefill's (or an AR step's) last logits fill the table row of the last token fed."""
        self.recycled.update(ids[-1:], logits[None])

    def _round(self, remaining: int, stats: GenerationStats) -> Round:
        depth = min(len(self.recycled.levels), remaining - 1)
        if depth == 0:
            return self._ar_round(stats)
        tree, root, n = self.tree, self.length - 1, self.recycled.levels[depth - 1].end
        tree.tokens[0] = self.committed[root]
        self.recycled.fill(tree.tokens, depth)
        tree.size = n
        logits = self._feed(self.target, self.target_cache, tree.tokens[:n], root, root + tree.depth[:n],
                            tree.ancestors[:n, :n])
        stats.target_forwards += 1
        target_next = self._pick(logits, tree.depth[:n])
        self.recycled.update(tree.tokens[:n], logits)  # recycled: no extra forward
        path, accepted, bonus = tree.accept(target_next)
        emitted = tree.emitted(path, accepted, bonus)
        accepted, *tokens = self._read(torch.cat([accepted[None], emitted]), {"target": finite(logits)},
                                       stats.rounds + 1)
        kv.keep_path(self.target_cache, root, path[: accepted + 1])
        self._commit(emitted[: accepted + 1])
        return Round(tokens[: accepted + 1], drafted=n - 1, accepted=accepted, nodes=n - 1,
                     drafted_upto=[0, *self._upto[:depth]])
