"""The node budget of a multi-source tree split between its sources (draft, lookup, recycle) by measured acceptance.

Pure host-side bookkeeping on Python scalars: the decoder reads each source's node count and earned depth with the
round's one blocking read and asks for the next round's counts.
"""

from __future__ import annotations

import math

SOURCES = ("draft", "lookup", "recycle")


class SourceSplit:
    """Each source's node count per round, from how deep the target accepted along its own nodes lately.

    `score[s]`: a running mean (weight `decay` on the past) of the depth the target accepted along source s's nodes,
    over the rounds s had nodes in; every source starts at 1. A source gets round(cap * min(1, score)) nodes: one
    that earns a token a round keeps its cap, one whose nodes keep failing shrinks to 0, and after `probe` rounds
    without nodes it gets a probe of half its cap, so it can come back. Cost: the draft (the one source that costs
    forwards) is not run at all while another source with nodes earns more than a token a round and the draft's
    `margin` (a running mean of how much deeper it got than every other source) is below `skip_below` tokens a
    round: the others already fill the tree with likelier tokens (the draft is probed every `probe` rounds).
    """

    def __init__(self, caps: dict[str, int], decay: float = 0.7, probe: int = 8, skip_below: float = 0.5):
        self.caps, self.decay, self.probe, self.skip_below = caps, decay, probe, skip_below
        self.reset()

    def reset(self) -> None:
        self.score = dict.fromkeys(self.caps, 1.0)
        self.idle = dict.fromkeys(self.caps, 0)
        self.margin = 1.0

    def plan(self) -> dict[str, int]:
        """The next round's node count per source (each within its cap)."""
        counts = {s: round(cap * min(1.0, self.score[s])) for s, cap in self.caps.items()}
        for s, cap in self.caps.items():
            if cap and not counts[s] and self.idle[s] >= self.probe:
                counts[s] = math.ceil(cap / 2)
        if counts.get("draft") and self.idle["draft"] < self.probe and self._others_suffice(counts):
            counts["draft"] = 0
        for s in self.caps:
            self.idle[s] = 0 if counts[s] else self.idle[s] + 1
        return counts

    def update(self, nodes: dict[str, int], earned: dict[str, int]) -> None:
        """After a round: each source's live nodes and the depth accepted along them (no nodes: nothing learnt)."""
        for s in self.caps:
            if nodes.get(s):
                self.score[s] = self.decay * self.score[s] + (1 - self.decay) * earned[s]
        if nodes.get("draft"):
            others = max((earned[s] for s in self.caps if s != "draft" and nodes.get(s)), default=0)
            self.margin = self.decay * self.margin + (1 - self.decay) * max(0, earned["draft"] - others)

    def _others_suffice(self, counts: dict[str, int]) -> bool:
        best = max((self.score[s] for s in self.caps if s != "draft" and counts[s]), default=0.0)
        return best > 1.0 and self.margin < self.skip_below
