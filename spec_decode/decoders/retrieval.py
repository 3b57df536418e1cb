"""Retrieval (as in REST and SAM-decoding, from the context only): draft-free trees of earlier continuations.

Each round takes the `branches` longest earlier matches of the context's suffix (prompt and generated text, n <=
`ngram`, the most recent first among equally long ones), grafts the `lookup` tokens that followed each into one
tree (continuations sharing a prefix share its nodes) and verifies it in one target forward. With `adaptive`, each
round verifies only as many tokens of them as pay, judged from the suffix match's length (`LengthByMatch`): from none
(a plain AR step) to `lookup`; this replaces the fallback.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from spec_decode import kv
from spec_decode.decoders.base import Decoder, GenerationStats, Round, check_count, check_flag, finite
from spec_decode.lookup import LengthByMatch, retrieve_continuations
from spec_decode.tree import Level, TokenTree


class RetrievalDecoder(Decoder):
    """Tree speculation without a draft model: the tree's branches are the context's own earlier continuations."""

    name = "retrieval"
    counts_nodes = True

    def __init__(self, target: PreTrainedModel, lookup: int = 8, branches: int = 4, ngram: int = 4,
                 fallback: bool = True, adaptive: bool = False):
        self.validate(lookup, branches, ngram, fallback, adaptive)
        super().__init__(target)
        self.lookup, self.branches, self.ngram = lookup, branches, ngram
        self.fallback, self.adaptive = fallback and not adaptive, adaptive
        self.lengths = LengthByMatch(ngram, lookup) if adaptive else None
        self._chosen = (0, 0)  # this round's (match length, verified length), for `_observe`
        self.tree = TokenTree(0, self.device, reserve=lookup * branches)

    @staticmethod
    def validate(lookup: int = 8, branches: int = 4, ngram: int = 4, fallback: bool = True,
                 adaptive: bool = False) -> None:
        """Raise ValueError for knobs outside their range."""
        for name, value in (("lookup", lookup), ("branches", branches), ("ngram", ngram)):
            check_count(name, value, minimum=1)
        check_flag("fallback", fallback)
        check_flag("adaptive", adaptive)

    def params(self) -> dict:
        return {"lookup": self.lookup, "branches": self.branches, "ngram": self.ngram, "fallback": self.fallback,
                "adaptive": self.adaptive}

    def reset_state(self) -> None:
        super().reset_state()
        if self.lengths is not None:
            self.lengths.reset()

    @property
    def lookahead(self) -> int:
        return self.lookup * self.branches + 1

    def _round(self, remaining: int, stats: GenerationStats) -> Round:
        length = min(self.lookup, remaining - 1)
        if length == 0:
            return self._ar_round(stats)
        chains, counts, matched = retrieve_continuations(self.committed[: self.length], self.ngram, length,
                                                         self.branches)
        if self.adaptive:
            counts, length = self._adapt(counts, matched, length)
            if length == 0:
                return self._ar_round(stats)
        tree, root = self.tree, self.length - 1
        tree.reset(self.committed[root])
        tree.graft_all(chains, counts)
        n = tree.compact()  # host read 1: the live tree's size (no match: the root alone, an AR step)
        logits = self._feed(self.target, self.target_cache, tree.tokens[:n], root, root + tree.depth[:n],
                            tree.block(Level(0, n), 0))
        stats.target_forwards += 1
        path, accepted, bonus = tree.accept(self._pick(logits, tree.depth[:n]))
        emitted = tree.emitted(path, accepted, bonus)
        values = torch.cat([accepted[None], tree.nodes_upto(length + 1), emitted])
        accepted, *rest = self._read(values, {"target": finite(logits)}, stats.rounds + 1)  # host read 2
        upto, tokens = rest[: length + 1], rest[length + 1 : length + 2 + accepted]
        kv.keep_path(self.target_cache, root, path[: accepted + 1])
        self._commit(emitted[: accepted + 1])
        return Round(tokens, drafted=n - 1, accepted=accepted, nodes=n - 1, drafted_upto=upto)

    def _adapt(self, counts: torch.Tensor, matched: torch.Tensor, length: int) -> tuple[torch.Tensor, int]:
        """The continuations cut to the length `lengths` chooses for their match (an extra host read of two ints)."""
        longest, rows = torch.stack([matched[0], (counts > 0).sum()]).tolist()
        chosen = self.lengths.choose(longest, rows, length)
        self._chosen = (longest, chosen)
        return counts.clamp(max=chosen), chosen

    def _observe(self, new: Round, seconds: float, stats: GenerationStats) -> None:
        if self.lengths is not None:
            self.lengths.observe(*self._chosen, new.accepted, new.nodes or 0, seconds)
            self._chosen = (0, 0)
