"""The node budget of a multi-source tree split between its sources (draft, lookup, recycle) by measured acceptance
and cost.

Pure host-side bookkeeping on Python scalars: the decoder reads each source's node count and earned depth with the
round's one blocking read, hands over the round's measured seconds, and asks for the next round's counts.
"""

from __future__ import annotations

import math

from spec_decode.costmodel import OnlineCost

SOURCES = ("draft", "lookup", "recycle")


class SourceSplit:
    """Each source's node count per round, from how deep the target accepted along its own nodes lately, and whether
    those nodes pay for what they cost.

    `score[s]`: a running mean (weight `decay` on the past) of the depth the target accepted along source s's nodes,
    over the rounds s had nodes in; every source starts at 1. A source gets round(cap * min(1, score)) nodes: one
    that earns a token a round keeps its cap, one whose nodes keep failing shrinks to 0, and after `probe` rounds
    without nodes it gets a probe of half its cap, so it can come back. `gain[s]`: the same running mean of how much
    deeper s got than every other source with nodes that round (what s adds beside them).

    Cost, once `cost` (an `OnlineCost` fitted from the rounds' measured seconds) knows enough: the source with the
    most accepted tokens per second of its own cost leads; each other source keeps its nodes only if the tokens it
    adds (gain) are worth more seconds (at the recent seconds per token) than its nodes and, for the draft, its
    forwards cost; a leader whose own tokens do not pay for it goes too (a bare AR step). Before that, the draft
    (the one source that costs forwards) is skipped while another source earns more than a token a round and the
    draft's gain is below `skip_below`. A probe is always run.
    """

    def __init__(self, caps: dict[str, int], decay: float = 0.7, probe: int = 8, skip_below: float = 0.5):
        self.caps, self.decay, self.probe, self.skip_below = caps, decay, probe, skip_below
        self.cost = OnlineCost()  # carried over between generations, like the fallback's costs
        self.draft_forwards = 1.0  # a running mean over the rounds that ran the draft
        self.reset()

    def reset(self) -> None:
        """A new generation: acceptance starts over (the text changed); the fitted costs stay."""
        self.score = dict.fromkeys(self.caps, 1.0)
        self.gain = dict.fromkeys(self.caps, 1.0)
        self.idle = dict.fromkeys(self.caps, 0)

    def plan(self) -> dict[str, int]:
        """The next round's node count per source (each within its cap)."""
        counts = {s: round(cap * min(1.0, self.score[s])) for s, cap in self.caps.items()}
        probes = {s for s, cap in self.caps.items() if cap and self.idle[s] >= self.probe}
        counts |= {s: counts[s] or math.ceil(self.caps[s] / 2) for s in probes}
        coefficients = self.cost.coefficients()
        if coefficients is not None:
            counts = self._paying(counts, probes, coefficients)
        elif "draft" not in probes and self._others_suffice(counts):
            counts["draft"] = 0
        for s in self.caps:
            self.idle[s] = 0 if counts[s] else self.idle[s] + 1
        return counts

    def update(self, nodes: dict[str, int], earned: dict[str, int]) -> None:
        """After a round: each source's live nodes and the depth accepted along them (no nodes: nothing learnt)."""
        for s in self.caps:
            if nodes.get(s):
                others = max((earned[o] for o in self.caps if o != s and nodes.get(o)), default=0)
                self.score[s] += (1 - self.decay) * (earned[s] - self.score[s])
                self.gain[s] += (1 - self.decay) * (max(0, earned[s] - others) - self.gain[s])

    def observe(self, forwards: int, nodes: int, seconds: float, tokens: int) -> None:
        """After a round (or an AR step): its draft forwards, verified nodes, measured seconds and emitted tokens."""
        self.cost.observe(forwards, nodes, seconds=seconds, tokens=tokens)
        if forwards:
            self.draft_forwards += (1 - self.decay) * (forwards - self.draft_forwards)

    def _paying(self, counts: dict[str, int], probes: set[str], coefficients) -> dict[str, int]:
        """The counts with every non-probe source whose tokens are worth less than its nodes (and forwards) cost cut."""
        _, per_forward, per_node = coefficients
        forwards = {"draft": per_forward * self.draft_forwards}
        seconds = {s: per_node * n + forwards.get(s, 0.0) for s, n in counts.items()}
        per_token = self.cost.seconds_per_token()
        live = [s for s in counts if counts[s]]
        if not live:
            return counts
        leader = max(live, key=lambda s: self.score[s] / max(seconds[s], 1e-9))
        for s in live:
            tokens = self.score[s] if s == leader else self.gain[s]
            if s not in probes and tokens * per_token < seconds[s]:
                counts[s] = 0
        return counts

    def _others_suffice(self, counts: dict[str, int]) -> bool:
        best = max((self.score[s] for s in self.caps if s != "draft" and counts[s]), default=0.0)
        return best > 1.0 and self.gain["draft"] < self.skip_below
