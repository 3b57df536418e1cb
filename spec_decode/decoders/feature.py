"""Speculation with an EAGLE-style feature draft (Li et al., 2024): the draft reads the target's last hidden states.

`offline.FeatureDraftForCausalLM` takes, with each token, the target's last hidden state at the position before
(within a round: its own prediction of it). Every target forward (prefill, AR step, verification) leaves its states
in `features`; after a round the draft's cache is cut back to the round's start, so the accepted tokens are fed to
it again with the target's states instead of its own guesses. Tokens are verified exactly as without features.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from spec_decode import kv
from spec_decode.decoders.base import GenerationStats, finite
from spec_decode.decoders.linear import LinearDecoder
from spec_decode.decoders.tree import TreeDecoder
from spec_decode.tree import Level


class FeatureStates:
    """The target's states per committed position, and the draft's catch-up that reads them (a decoder mixin)."""

    keeps_hidden = True

    def _check_feature_draft(self, draft: PreTrainedModel) -> None:
        if not getattr(draft, "takes_features", False):
            raise ValueError(f"method {self.name} needs a feature draft (model.feature_draft: a folder written by "
                             "scripts/distill_draft.py train --feature)")

    def _begin(self, prompt: torch.Tensor, max_new_tokens: int) -> None:
        if self.static_cache or self.compile:
            raise ValueError(f"method {self.name} runs on dynamic caches only (turn static_cache and compile off)")
        super()._begin(prompt, max_new_tokens)
        # row p + 1 holds the target's state at position p; row 0 (before the first token) stays zero
        width = self.target.config.hidden_size
        self.features = torch.zeros(self.committed.numel() + 1, width, dtype=self.target.dtype, device=self.device)

    def _prefilled(self, ids: torch.Tensor, logits: torch.Tensor) -> None:
        """The prefill or an AR step fed `ids` up to the pending token: keep their states."""
        super()._prefilled(ids, logits)
        n = ids.numel()
        self.features[self.length - n + 1 : self.length + 1] = self.last_hidden["target"][-n:]

    def _keep_states(self, base: int, rows: torch.Tensor) -> None:
        """After a verification whose first position was `base - 1`: keep the accepted tokens' states (`rows` of the
        target's hidden states, in order), and cut the draft back so that it re-reads them next round."""
        self.features[base : base + rows.numel()] = self.last_hidden["target"][rows]
        kv.rollback(self.draft_cache, base)

    def _draft_catch_up(self, stats: GenerationStats) -> torch.Tensor:
        """Feed the draft the committed tokens its cache lacks, each with the target's state before it."""
        start = kv.next_position(self.draft_cache)
        ids = self.committed[start : self.length]
        logits = self._feed(self.draft, self.draft_cache, ids, start, last_only=True,
                            features=self.features[start : self.length])[-1]
        stats.draft_forwards += 1
        self.draft_ok = finite(logits)
        return logits


class FeatureLinearDecoder(FeatureStates, LinearDecoder):
    """Linear speculation with a feature draft: each draft step reads the draft's own predicted state before it."""

    name = "eagle"

    def __init__(self, target: PreTrainedModel, draft: PreTrainedModel, k: int, confidence: float = 0.0,
                 fallback: bool = True):
        self._check_feature_draft(draft)
        super().__init__(target, draft, k, confidence, fallback=fallback)

    @staticmethod
    def validate(k: int, confidence: float = 0.0, cache_size: int | None = None, sink: int = 4,
                 fallback: bool = True) -> None:
        """Raise ValueError for knobs outside their range (no streaming cache: the states would need evicting too)."""
        if cache_size is not None:
            raise ValueError("method eagle does not stream (no cache_size)")
        LinearDecoder.validate(k, confidence, fallback=fallback)

    def _verified(self, base: int, accepted: int) -> None:
        kv.rollback(self.target_cache, base + accepted)
        self._keep_states(base, torch.arange(accepted + 1, device=self.device))

    def _draft_feed(self, ids: torch.Tensor, start: int, stats: GenerationStats, positions: torch.Tensor | None = None,
                    block: torch.Tensor | None = None) -> torch.Tensor:
        """One draft step: its token with the draft's own predicted state of the position before."""
        return super()._draft_feed(ids, start, stats, positions, block, features=self.last_hidden["draft"][-1:])


class FeatureTreeDecoder(FeatureStates, TreeDecoder):
    """Tree speculation with a feature draft (EAGLE's draft trees): each node reads its parent's predicted state."""

    name = "eagle_tree"

    def __init__(self, target: PreTrainedModel, draft: PreTrainedModel, depth: int, branch: int, **knobs):
        self._check_feature_draft(draft)
        if knobs.get("cache_size") is not None:
            raise ValueError("method eagle_tree does not stream (no cache_size)")
        super().__init__(target, draft, depth, branch, **knobs)
        width = target.config.hidden_size
        self._slot_states = torch.zeros(self.tree.tokens.numel(), width, dtype=target.dtype, device=self.device)

    def _draft_catch_up(self, stats: GenerationStats) -> torch.Tensor:
        logits = super()._draft_catch_up(stats)
        self._slot_states[0] = self.last_hidden["draft"][-1]  # the root's predicted state
        return logits

    def _draft_level(self, level: Level, depth: int, stats: GenerationStats) -> torch.Tensor:
        """One batched draft forward over a level, each node with its parent's predicted state."""
        tree, base = self.tree, self.length
        positions = torch.full((level.size,), base - 1 + depth, device=self.device)
        states = self._slot_states[tree.parents[level.start : level.end]]
        logits = self._draft_feed(tree.tokens[level.start : level.end], base, stats, positions, tree.block(level, 1),
                                  features=states)
        self._slot_states[level.start : level.end] = self.last_hidden["draft"]
        return logits

    def _verified(self, root: int, path: torch.Tensor, accepted: int, in_draft: int, drafting: bool) -> None:
        kv.keep_path(self.target_cache, root, path[: accepted + 1])
        self._keep_states(root + 1, path[: accepted + 1])
