"""Tree speculative decoding with dynamic pruning: one batched draft forward per level, one target verify."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from spec_decode import kv
from spec_decode.decoders.base import Fallback, GenerationStats, Round, check_count, check_flag, check_streaming, finite
from spec_decode.decoders.speculative import Peek, SpeculativeDecoder
from spec_decode.lookup import retrieve_continuations
from spec_decode.recycle import RecycleTable
from spec_decode.split import SOURCES, SourceSplit
from spec_decode.tree import Level, TokenTree, level_slots, max_tree_nodes


class TreeDecoder(SpeculativeDecoder):
    """Grow a token tree (depth D, branch B, threshold tau, node cap), verify it in one target forward.

    A child is kept when its draft probability given its parent is >= `threshold`; when a level would
    pass `max_nodes` (root excluded), the candidates with the highest path probability are kept.
    With `lookup` > 0 the tree also holds a chain of up to `lookup` tokens continuing the latest earlier
    occurrence of the context's last n-gram (n <= `ngram`), verified in the same target forward (with
    `lookup_branches` > 1, that many chains, the longest earlier matches of the context's suffix first; chains
    sharing a prefix share its nodes); with `lookup_first`, a round whose first chain starts with the draft's top
    choice grows no deeper draft levels (the text is repeating itself: the chain is likelier than the draft and
    costs no draft forwards).
    With `recycle` > 0 the tree also holds a recycled subtree from the root (Token Recycling's table of each token's
    top next tokens, refreshed from every verification's logits; the `recycle` likeliest rank paths), verified in
    the same forward. With `budget_split`, each source's node count is re-decided every round from the depth the
    target accepted along its nodes lately and what they cost (spec_decode/split.py; `split_cost=false`: acceptance
    alone); a round may then run no draft at all. With `fallback` and lookup, a round where full rounds cost more
    per token is the lookup chains alone (no draft).

    A round reads the device twice: the live tree's size before verification (dead, pruned slots are never
    verified) and the accepted count with the emitted tokens. A level whose live count has not reached the host
    when the draft needs it (CUDA only) is fed with its dead slots; streaming, the draft's cache may then hold
    them on top of `cache_size` until the round ends (the target's never does).
    """

    name = "tree"
    counts_nodes = True
    trace_rounds = 0  # record the first N rounds' trees (nodes, pruned children, target verdicts, accepted path)
    recycle_branch = 8  # ranks per node of the recycled table (Token Recycling's default)

    def __init__(self, target: PreTrainedModel, draft: PreTrainedModel, depth: int, branch: int,
                 threshold: float = 0.0, max_nodes: int = 1_000_000, lookup: int = 0, ngram: int = 3,
                 lookup_first: bool = False, lookup_branches: int = 1, recycle: int = 0,
                 budget_split: bool = False, cache_size: int | None = None, sink: int = 4, fallback: bool = True,
                 split_cost: bool = True):
        super().__init__(target, draft, cache_size, sink)
        self.validate(depth, branch, threshold, max_nodes, lookup, ngram, lookup_first, lookup_branches, recycle,
                      budget_split, cache_size, sink, fallback, split_cost)
        self.depth, self.branch, self.threshold, self.max_nodes = depth, branch, threshold, max_nodes
        self.fallback = fallback
        self.lookup, self.ngram, self.lookup_first, self.lookup_branches = lookup, ngram, lookup_first, lookup_branches
        self.recycle, self.budget_split, self.split_cost = recycle, budget_split, split_cost
        capacity = max_tree_nodes(depth, branch, max_nodes)
        self._level_slots = sum(level_slots(depth, branch, capacity))
        reserve = lookup * lookup_branches + recycle
        self.tree = TokenTree(capacity, self.device, reserve=reserve, slots=self._level_slots)
        self._peek = Peek(self.device, depth, width=2)
        self.recycled = None
        if recycle:
            self.recycled = RecycleTable(target.config.vocab_size, depth, self.recycle_branch, recycle, self.device)
            self._recycled_tokens = torch.zeros_like(self.recycled.parents)
        self.caps = {"draft": capacity, "lookup": lookup, "recycle": recycle}
        self.split = SourceSplit(self.caps)
        self.chains_chooser = Fallback(settle=False)  # a fallback round: the lookup chains alone, or an AR step
        self._chains_alone: bool | None = None  # the kind of the round being run, when it is a fallback round

    @property
    def lookahead(self) -> int:
        """The most nodes the target verifies at once (live nodes only; the draft may also get dead slots)."""
        return self.tree.capacity + self.lookup * self.lookup_branches + self.recycle + 1

    @property
    def draft_round_feed(self) -> int:
        """On CUDA a late peek can feed the draft every level's slots, dead ones included (never more)."""
        return max(self.lookahead, self._level_slots + 1)

    @staticmethod
    def validate(depth: int, branch: int, threshold: float = 0.0, max_nodes: int = 1_000_000, lookup: int = 0,
                 ngram: int = 3, lookup_first: bool = False, lookup_branches: int = 1, recycle: int = 0,
                 budget_split: bool = False, cache_size: int | None = None, sink: int = 4,
                 fallback: bool = True, split_cost: bool = True) -> None:
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
        check_count("lookup_branches", lookup_branches, minimum=1)
        check_flag("lookup_first", lookup_first)
        check_flag("budget_split", budget_split)
        check_flag("split_cost", split_cost)
        check_flag("fallback", fallback)
        check_count("recycle", recycle, minimum=0)
        nodes = max_tree_nodes(depth, branch, max_nodes) + lookup * lookup_branches + recycle
        check_streaming(cache_size, sink, lookahead=nodes + 1, needed=max(depth, lookup) + 1)

    def params(self) -> dict:
        lookup = {"lookup": self.lookup, "ngram": self.ngram, "lookup_first": self.lookup_first,
                  "lookup_branches": self.lookup_branches} if self.lookup else {}
        recycle = {"recycle": self.recycle} if self.recycle else {}
        split = {"budget_split": True, "split_cost": self.split_cost} if self.budget_split else {}
        return {"depth": self.depth, "branch": self.branch, "threshold": self.threshold,
                "max_nodes": self.max_nodes} | lookup | recycle | split | super().params()

    def reset_state(self) -> None:
        """Forget the recycled table, the budget split's fitted costs and the fallback rounds' chooser (the benchmark
        calls this after warm-up)."""
        super().reset_state()
        self.split.cost.reset()
        self.chains_chooser.reset()
        if self.recycled is not None:
            self.recycled.clear()

    def _begin(self, prompt: torch.Tensor, max_new_tokens: int) -> None:
        super()._begin(prompt, max_new_tokens)
        self.split.reset()
        self.chains_chooser.begin()
        self._forwards_seen = 0

    def _observe(self, new: Round, seconds: float, stats: GenerationStats) -> None:
        """The budget split's cost fit takes the round's draft forwards, verified nodes and measured seconds (not fed
        with `split_cost=false`: the split then runs on acceptance alone); a fallback round's time goes to the chooser
        between the lookup chains alone and an AR step."""
        if self._chains_alone is not None:
            self.chains_chooser.record(self._chains_alone, seconds, len(new.tokens))
            self._chains_alone = None
        if self.budget_split and self.split_cost:
            forwards, self._forwards_seen = stats.draft_forwards - self._forwards_seen, stats.draft_forwards
            self.split.observe(forwards, new.nodes or 0, seconds, len(new.tokens))

    def _prefilled(self, prompt: torch.Tensor, logits: torch.Tensor) -> None:
        """The prefill's last logits fill the recycled table row of the prompt's last token."""
        if self.recycled is not None:
            self.recycled.update(prompt[-1:], logits[None])

    def _fallback_round(self, remaining: int, stats: GenerationStats) -> Round:
        """With lookup: the lookup chains alone (no draft forward, no recycled nodes; no match: an AR step) or a plain
        AR step, whichever has cost less per token (`chains_chooser`: a repetitive text pays for chains that a
        fresh one does not)."""
        if not self.lookup:
            return self._ar_round(stats)
        self._chains_alone = self.chains_chooser.speculate
        if not self._chains_alone:
            return self._ar_round(stats)
        return self._round(remaining, stats, plan={"draft": 0, "lookup": self.lookup, "recycle": 0})

    def _round(self, remaining: int, stats: GenerationStats, plan: dict[str, int] | None = None) -> Round:
        """One round with each source's node count from `plan` (default: the budget split's, or every cap)."""
        depth = min(self.depth, remaining - 1)
        if depth == 0:
            return self._ar_round(stats)
        tree, root = self.tree, self.length - 1
        tracing = len(stats.trace) < self.trace_rounds
        tree.pruned = [] if tracing else None
        plan = plan or (self.split.plan() if self.budget_split else self.caps)
        chains = None
        if plan["lookup"]:
            chains, counts, _ = retrieve_continuations(self.committed[: self.length], self.ngram,
                                                       min(self.lookup, remaining - 1), self.lookup_branches)
            chains = (chains, counts.clamp(max=plan["lookup"]))
        drafting = plan["draft"] > 0
        first = (chains[0][0], chains[1][0]) if chains is not None and self.lookup_first else None
        fed = self._grow(depth, stats, first, plan["draft"]) if drafting else 0
        if not drafting:
            tree.reset(self.committed[root])
            self.draft_ok = torch.ones((), dtype=torch.bool, device=self.device)
        bounds = [tree.size]  # slots before this bound are the draft's, then the lookup chains', then recycled
        if chains is not None:
            tree.graft_all(*chains)
        bounds.append(tree.size)
        if plan["recycle"]:
            self._hang_recycled(depth, plan["recycle"])
        n = tree.compact()  # host read 1: the live tree's size
        target_next, target_ok = self._verify(stats)
        path, accepted, bonus = tree.accept(target_next)
        emitted = tree.emitted(path, accepted, bonus)
        in_draft = ((tree.slot[path] <= fed) & (torch.arange(n, device=self.device) <= accepted)).sum()
        levels = max(depth, self.lookup) + 1
        sources = self._by_source(target_next, bounds) if self.budget_split else emitted[:0]
        values = torch.cat([accepted[None], in_draft[None], sources, tree.nodes_upto(levels), emitted])
        checks = {"target": target_ok, "draft": self.draft_ok}
        accepted, in_draft, *rest = self._read(values, checks, stats.rounds + 1)  # host read 2
        if self.budget_split:
            k = len(SOURCES)
            nodes, earned, rest = rest[:k], rest[k : 2 * k], rest[2 * k :]
            self.split.update(dict(zip(SOURCES, nodes, strict=True)), dict(zip(SOURCES, earned, strict=True)))
        drafted_upto, tokens = rest[:levels], rest[levels : levels + accepted + 1]
        if tracing:
            stats.trace.append(tree.snapshot() | {"target_next": target_next[:n].tolist(),
                                                  "accepted": path[: accepted + 1].tolist(), "bonus": tokens[-1],
                                                  "plan": dict(plan)})
        self._verified(root, path, accepted, in_draft, drafting)
        self._commit(emitted[: accepted + 1])
        return Round(tokens, drafted=n - 1, accepted=accepted, nodes=n - 1, drafted_upto=drafted_upto)

    def _verified(self, root: int, path: torch.Tensor, accepted: int, in_draft: int, drafting: bool) -> None:
        """After verification: both caches keep the accepted path (the draft: the path's nodes it was fed)."""
        kv.keep_path(self.target_cache, root, path[: accepted + 1])
        if drafting:
            kv.keep_path(self.draft_cache, root, self.tree.slot[path[:in_draft]])

    def _hang_recycled(self, depth: int, nodes: int) -> None:
        """Hang the `nodes` likeliest recycled rank paths (depth <= `depth`) from the root, filled from the table."""
        recycled, tokens = self.recycled, self._recycled_tokens
        tokens[0] = self.tree.tokens[0]
        recycled.fill(tokens, depth)
        live = (recycled.order <= nodes) & (recycled.depths <= depth)
        self.tree.append_template(tokens, recycled.parents, recycled.ancestors, live)

    def _by_source(self, target_next: torch.Tensor, bounds: list[int]) -> torch.Tensor:
        """Per source (draft, lookup, recycle): its live nodes, then the depth of its deepest agreeing node."""
        tree = self.tree
        n = tree.size
        slot = tree.slot[1:n]
        source = (slot >= bounds[0]).long() + (slot >= bounds[1]).long()  # 0 draft, 1 lookup, 2 recycle
        nodes = torch.zeros(len(SOURCES), dtype=torch.long, device=self.device)
        nodes.scatter_add_(0, source, torch.ones_like(source))
        earned = torch.zeros_like(nodes).scatter_reduce_(0, source, tree.depth[1:n] * tree.agreeing(target_next)[1:],
                                                         "amax")
        return torch.cat([nodes, earned])

    def _grow(self, depth: int, stats: GenerationStats, chain: tuple[torch.Tensor, torch.Tensor] | None = None,
              budget: int | None = None) -> int:
        """Grow the tree (at most `budget` live nodes) level by level; return the last slot fed to the draft (0: none).

        Growth stops once a level is empty or the tree full, and, with `chain` (a lookup chain, lookup_first),
        after the first level when the chain starts with the draft's top choice. Those stops, and each level's
        live count (to feed the draft live nodes only), are peeked without blocking: a level grown past a stop not
        yet seen holds dead nodes only (`allow`), so the tree is the same; an unseen count feeds dead slots along.
        """
        tree, root = self.tree, self.length - 1
        level = tree.reset(self.committed[root], budget)
        logits = self._draft_catch_up(stats)[None]
        peek, allow, fed = self._peek.reset(), None, 0
        for d in range(1, depth + 1):
            level = tree.grow(level, self._draft_scores(logits), self.branch, self.threshold, allow)
            if d == depth or level.size == 0:
                break
            stop = tree.stalled(level)
            if d == 1 and chain is not None:
                tokens, count = chain
                allow = ~((count > 0) & (tokens[0] == tree.tokens[level.start]) & tree.live[level.start])
                stop = stop | ~allow
            peek.post(torch.stack([stop.long(), tree.live[level.start : level.end].sum()]))
            seen = peek.seen()
            if any(row[0] for row in seen):
                break
            if len(seen) == d:  # this level's live count is on the host already: feed its live nodes only
                level = tree.trim(level, seen[-1][1])
            logits = self._draft_level(level, d, stats)
            fed = level.end - 1
        return fed

    def _draft_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """The draft's scores children are ranked and pruned by: its logits, or (sampling) its warped logits, so that
        temperature, top-k and top-p shape the tree as they shape the target's draws."""
        return logits if self.sampling.greedy else self.sampling.scores(logits)

    def _draft_level(self, level: Level, depth: int, stats: GenerationStats) -> torch.Tensor:
        """One batched draft forward over a whole level (dead slots included), under the tree mask."""
        tree, base = self.tree, self.length
        positions = torch.full((level.size,), base - 1 + depth, device=self.device)
        return self._draft_feed(tree.tokens[level.start : level.end], base, stats, positions, tree.block(level, 1))

    def _verify(self, stats: GenerationStats) -> tuple[torch.Tensor, torch.Tensor]:
        """One target forward over the compacted tree; the target's token after every node, and a finite flag.

        Sampling, the token after each node is its processed distribution's inverse CDF at the uniform of the output
        position it decides (one per depth). Every child is a deterministic proposal (a point-mass q), so recursive
        rejection sampling over a node's children (accept c with probability p(c), else go on with p without c) is
        the same as one draw from p matched against them; with one uniform per position, duplicate siblings (a
        draft child equal to a lookup child) draw alike, and a round emits exactly AR sampling's tokens.

        With a recycled table, the logits refresh the rows of the verified tokens (no extra forward)."""
        tree, past = self.tree, self.length - 1
        positions = past + tree.depth[: tree.size]
        logits = self._feed(self.target, self.target_cache, tree.tokens[: tree.size], past, positions,
                            tree.block(Level(0, tree.size), 0))
        stats.target_forwards += 1
        if self.recycled is not None:
            self.recycled.update(tree.tokens[: tree.size], logits)
        return self._pick(logits, tree.depth[: tree.size]), finite(logits)
