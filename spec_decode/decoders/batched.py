"""Greedy decoding of several prompts at once (batch_size > 1): AR, Linear and Tree speculation, ragged acceptance.

The scheme. Rows are left-padded to the longest prompt, so row b's position p lives in slot `pad[b] + p` of one
pre-allocated KV cache per model (`RowCache`). Every forward writes each row's tokens from that row's own next slot,
so rows that accepted different numbers of drafts simply stay apart: a rejected draft's slot is written over in the
next round, nothing is cropped to the shortest row or fed twice, and a tree's accepted path is gathered in place
per row. A query of row b sees its row's held slots and, among the tokens fed with it, what its block mask allows;
positions are per row. The other scheme (crop every row to the shortest acceptance each round, re-feed the rest)
feeds each row max(accepted) - accepted[b] tokens again through both models every round: more work, same tokens.

A row that finishes (a stop token or max_new_tokens) leaves the batch at the end of that round: its cache rows are
dropped and later forwards compute the running rows only. Decoding is greedy; every row emits exactly what batch-1
greedy AR emits for its prompt (up to kernel rounding: batched GEMMs may round differently, see the tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel
from transformers.cache_utils import Cache, StaticLayer

from spec_decode.decoders.base import Clock, Decoder, GenerationStats, Round, StopIds, finite, stop_set
from spec_decode.decoders.linear import LinearDecoder
from spec_decode.decoders.tree import TreeDecoder
from spec_decode.lookup import Continuations, retrieve_continuations
from spec_decode.sampling import GREEDY, Sampling
from spec_decode.tree import TokenTree, level_slots, max_tree_nodes


class _RowLayer(StaticLayer):
    """A pre-allocated layer: a forward writes row b's keys at slots `cache.index[b]` and attends up to `cache.end`."""

    def __init__(self, capacity: int, cache: RowCache):
        super().__init__(capacity)
        self.cache = cache

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        index = self.cache.index[:, None, :, None]
        self.keys.scatter_(2, index.expand_as(key_states), key_states)
        self.values.scatter_(2, index.expand_as(value_states), value_states)
        return self.keys[:, :, : self.cache.end], self.values[:, :, : self.cache.end]


class RowCache(Cache):
    """One model's KV cache for a batch: row b holds positions [0, held[b]) at slots pad[b] onwards.

    `held` and `pad` live on the host (the round's one read updates them); `feed` writes the fed tokens after each
    row's held ones, and `hold` / `keep_path` decide afterwards which of them the row keeps.
    """

    def __init__(self, model: PreTrainedModel, pad: list[int], capacity: int):
        layers = model.config.get_text_config(decoder=True).num_hidden_layers
        super().__init__(layers=[_RowLayer(capacity, self) for _ in range(layers)])
        self.model, self.capacity = model, capacity
        self.pad, self.held = list(pad), [0] * len(pad)
        self.index, self.end = None, 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0  # positions and masks are always given explicitly

    def starts(self) -> torch.Tensor:
        """Each row's first free slot, on the device."""
        return torch.tensor([p + h for p, h in zip(self.pad, self.held, strict=True)], device=self.model.device)

    def feed(self, ids: torch.Tensor, positions: torch.Tensor, block: torch.Tensor,
             last_only: bool = False) -> torch.Tensor:
        """Feed `ids` (B, W) at `positions` (B, W); return the logits (B, W or 1, vocab).

        `block` (B, W, S), S >= W: which of the newest S slots past each row's held ones query i sees (the S - W
        written earlier this round, unheld, then the W fed now). Nothing fed is held until `hold` / `keep_path`.
        """
        width, span = ids.shape[1], block.shape[2]
        start = self.starts()
        self.index = start[:, None] + (span - width) + torch.arange(width, device=ids.device)
        self.end = max(p + h for p, h in zip(self.pad, self.held, strict=True)) + span
        if self.end > self.capacity:
            raise RuntimeError(f"batched cache overflow: {self.end} slots needed, {self.capacity} allocated")
        return self.model(input_ids=ids, position_ids=positions, attention_mask=self._mask(start, block), cache=self,
                          use_cache=True, logits_to_keep=1 if last_only else 0).logits

    def _mask(self, start: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
        """Additive (B, 1, W, end) mask: a query sees its row's held slots, and the newer slots its block allows."""
        rows, width, span = block.shape
        slots = torch.arange(self.end, device=block.device)
        after = slots[None] - start[:, None]  # (B, end): slot index past the row's held ones (< 0: held or pad)
        held = (slots[None] >= torch.tensor(self.pad, device=block.device)[:, None]) & (after < 0)
        inside = (after >= 0) & (after < span)
        newer = block.gather(2, after.clamp(0, span - 1)[:, None, :].expand(rows, width, -1)) & inside[:, None]
        visible = held[:, None, :] | newer
        mask = torch.zeros(visible.shape, dtype=self.model.dtype, device=block.device)
        return mask.masked_fill_(~visible, torch.finfo(self.model.dtype).min)[:, None]

    def hold(self, held: list[int]) -> None:
        """Set how many positions each row holds (the fed tokens past them are free slots again)."""
        self.held = list(held)

    def keep_path(self, offsets: torch.Tensor, counts: list[int]) -> None:
        """Row b keeps the fed tokens at `offsets[b, :counts[b]]` (ascending, relative to its first fed slot), moved
        to the front of its fed run and held; the rest are free again. The accepted KV is gathered, not recomputed."""
        start = self.starts()[:, None]
        target = start + torch.arange(offsets.shape[1], device=offsets.device)
        source = start + offsets
        for layer in self.layers:
            for name in ("keys", "values"):
                states = getattr(layer, name)
                gather = source[:, None, :, None].expand(-1, states.shape[1], -1, states.shape[3])
                moved = states.gather(2, gather)
                states.scatter_(2, target[:, None, :, None].expand_as(moved), moved)
        self.held = [h + c for h, c in zip(self.held, counts, strict=True)]

    def select(self, rows: list[int]) -> None:
        """Keep only `rows` of the batch (finished rows leave)."""
        index = torch.tensor(rows, device=self.model.device)
        for layer in self.layers:
            if layer.is_initialized:
                layer.keys, layer.values = layer.keys.index_select(0, index), layer.values.index_select(0, index)
        self.pad, self.held = [self.pad[r] for r in rows], [self.held[r] for r in rows]


def causal(rows: int, width: int, device: torch.device) -> torch.Tensor:
    """A (rows, width, width) causal block: fed token i sees fed tokens 0..i."""
    return torch.ones(width, width, dtype=torch.bool, device=device).tril_().expand(rows, -1, -1)


@dataclass
class BatchGeneration:
    """Per row: generated ids and the seconds from the batch's start until that row finished; the batch's stats
    (per round: tokens emitted and drafts accepted summed over the rows that ran it, `rows_per_round` of them)."""

    tokens: list[list[int]]
    row_seconds: list[float]
    stats: GenerationStats = field(default_factory=GenerationStats)


class BatchedDecoder:
    """Greedy decoding of a batch of prompts with one target forward per round for all running rows.

    Subclasses implement `_round`: it returns each running row's emitted tokens (bonus last) and, per row, drafted
    and accepted counts. Rows are cut at their stop token / max_new_tokens on the host, and leave when done.
    """

    name = "batched"
    profile = False
    sampling: Sampling = GREEDY
    drafts = False
    counts_nodes = False  # tree: a round's drafted count is its verified nodes

    def __init__(self, target: PreTrainedModel):
        self.target, self.device = target, target.device
        self.clock = Clock(self.device)
        self._forward_s = {"target": 0.0, "draft": 0.0}

    @property
    def lookahead(self) -> int:
        """The most tokens a round feeds one model per row."""
        return 1

    def params(self) -> dict:
        return {}

    def reset_state(self) -> None:
        """Nothing is learnt across generations."""

    @torch.inference_mode()
    def generate_batch(self, prompts: list[list[int]], max_new_tokens: int,
                       eos_token_id: StopIds = None) -> BatchGeneration:
        """Continue every prompt until a stop token or `max_new_tokens` tokens, all rows in one batch."""
        if not self.sampling.greedy:
            raise ValueError("batched decoding is greedy only (temperature 0)")
        if not prompts or any(len(p) < 1 for p in prompts):
            raise ValueError("every prompt of a batch must hold at least one token")
        stops, stats = stop_set(eos_token_id), GenerationStats()
        start = self.clock.now()
        self._begin(prompts, max_new_tokens)
        first = self._prefill(stats)
        stats.ttft_s = self.clock.now() - start
        out, seconds = [_cut([t], max_new_tokens, stops) for t in first], [0.0] * len(prompts)
        running = list(range(len(prompts)))  # prompt index of each batch row
        running = self._retire(running, out, seconds, start, max_new_tokens, stops)
        while running:
            round_start = self.clock.now()
            self._forward_s = {"target": 0.0, "draft": 0.0}
            done = self._extend(out, running, *self._round(stats), max_new_tokens, stops)
            stats.add(done, self.clock.now() - round_start, None, self._forward_s if self.profile else None)
            stats.rows_per_round.append(len(running))
            running = self._retire(running, out, seconds, start, max_new_tokens, stops)
        stats.total_s = self.clock.now() - start
        return BatchGeneration(out, seconds, stats)

    def _extend(self, out: list[list[int]], running: list[int], emitted: list[list[int]], drafted: list[int],
                accepted: list[int], max_new_tokens: int, stops: frozenset[int]) -> Round:
        """Append each running row's emitted tokens, cut at its stop token / max_new_tokens; the round as one record
        (its kept tokens, drafts, accepted drafts and tree nodes summed over the rows)."""
        kept, accepted_kept = [], 0
        for p, new, accepted_row in zip(running, emitted, accepted, strict=True):
            before = len(out[p])
            out[p] = _cut(out[p] + new, max_new_tokens, stops)
            kept += out[p][before:]
            accepted_kept += min(accepted_row, len(out[p]) - before)
        nodes = sum(drafted) if self.counts_nodes else None
        return Round(kept, drafted=sum(drafted), accepted=accepted_kept, nodes=nodes)

    def _retire(self, running: list[int], out: list[list[int]], seconds: list[float], start: float,
                max_new_tokens: int, stops: frozenset[int]) -> list[int]:
        """Rows whose output reached a stop token or the length leave the batch; the rows still running."""
        keep = [row for row, p in enumerate(running) if not _done(out[p], max_new_tokens, stops)]
        if len(keep) < len(running):
            now = self.clock.now() - start
            for row, p in enumerate(running):
                if row not in keep:
                    seconds[p] = now
            if keep:
                self._select(keep)
        return [running[row] for row in keep]

    def _begin(self, prompts: list[list[int]], max_new_tokens: int) -> None:
        """Left-pad the prompts; allocate the committed-token buffer and the target cache."""
        longest = max(len(p) for p in prompts)
        self.pad = [longest - len(p) for p in prompts]
        self.capacity = longest + max_new_tokens + 2 * self.lookahead + 2
        self.committed = torch.zeros(len(prompts), self.capacity, dtype=torch.long, device=self.device)
        for row, prompt in enumerate(prompts):
            self.committed[row, : len(prompt)] = torch.as_tensor(prompt, device=self.device)
        self.prompts = prompts
        self.length = [len(p) for p in prompts]  # committed tokens per row (the last one is pending in the target)
        self.target_cache = RowCache(self.target, self.pad, self.capacity)

    def _select(self, rows: list[int]) -> None:
        """Keep only `rows` in every per-row state."""
        index = torch.tensor(rows, device=self.device)
        self.committed = self.committed.index_select(0, index)
        self.length = [self.length[r] for r in rows]
        self.target_cache.select(rows)

    def _prefill(self, stats: GenerationStats) -> list[int]:
        """Feed every prompt (but nothing else) to the target; commit and return each row's first token."""
        logits = self._feed_prompts(self.target_cache, stats, "target")
        first = logits.argmax(-1)
        self._commit(first[:, None], [1] * len(self.length))
        return Decoder._read(first, {"target": finite(logits)}, 0)  # round 0: the prefill

    def _feed_prompts(self, cache: RowCache, stats: GenerationStats, role: str) -> torch.Tensor:
        """A prompt forward into `cache` (left-padded: the pad slots are never held); each row's last logits."""
        lengths = [len(p) for p in self.prompts]
        longest = max(lengths)
        ids = torch.zeros(len(lengths), longest, dtype=torch.long, device=self.device)
        positions = torch.zeros_like(ids)
        for row, (pad, length) in enumerate(zip(self.pad, lengths, strict=True)):
            ids[row, pad:] = self.committed[row, :length]
            positions[row, pad:] = torch.arange(length, device=self.device)
        cache.pad, cache.held = [0] * len(self.pad), [0] * len(self.pad)
        block = causal(len(lengths), longest, self.device) & self._real(longest)[:, None, :]
        block = block | torch.eye(longest, dtype=torch.bool, device=self.device)  # a pad query sees itself
        logits = self._timed(role, cache.feed, ids, positions, block, True)[:, -1]
        cache.pad, cache.held = list(self.pad), lengths
        stats.target_forwards += role == "target"
        stats.draft_forwards += role == "draft"
        return logits

    def _real(self, width: int) -> torch.Tensor:
        """Bool (B, width): the left-padded prompt columns that hold real tokens."""
        return torch.arange(width, device=self.device)[None] >= torch.tensor(self.pad, device=self.device)[:, None]

    def _timed(self, role: str, fn, *args):
        """Call a forward, timing it per model when profiling."""
        if not self.profile:
            return fn(*args)
        begin = self.clock.now()
        out = fn(*args)
        self._forward_s[role] += self.clock.now() - begin
        return out

    def _commit(self, tokens: torch.Tensor, counts: list[int]) -> None:
        """Append row b's first counts[b] of `tokens` (B, W) to its committed text."""
        width = tokens.shape[1]
        index = torch.tensor(self.length, device=self.device)[:, None] + torch.arange(width, device=self.device)
        self.committed.scatter_(1, index, tokens)  # the tokens past counts[b] are written over later
        self.length = [n + c for n, c in zip(self.length, counts, strict=True)]

    def _pending(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's last committed token (B, 1) and its position (B, 1)."""
        last = torch.tensor(self.length, device=self.device)[:, None] - 1
        return self.committed.gather(1, last), last

    @staticmethod
    def _read(values: torch.Tensor, checks: dict[str, torch.Tensor], stats: GenerationStats) -> list:
        """The round's one host read (every row's values, flattened), with each model's logits-finite flag."""
        return Decoder._read(values.reshape(-1), checks, stats.rounds + 1)

    def _round(self, stats: GenerationStats) -> tuple[list[list[int]], list[int], list[int]]:
        raise NotImplementedError


class BatchedARDecoder(BatchedDecoder):
    """One target forward per step for every running row."""

    name = "ar"

    def _round(self, stats):
        pending, position = self._pending()
        rows = pending.shape[0]
        self.target_cache.hold([n - 1 for n in self.length])
        logits = self._timed("target", self.target_cache.feed, pending, position, causal(rows, 1, self.device))[:, -1]
        stats.target_forwards += 1
        nxt = logits.argmax(-1)
        self._commit(nxt[:, None], [1] * rows)
        tokens = self._read(nxt, {"target": finite(logits)}, stats)
        return [[t] for t in tokens], [0] * rows, [0] * rows


class _BatchedSpeculative(BatchedDecoder):
    """A draft model with its own row cache, caught up each round with the committed tokens it lacks."""

    drafts = True

    def __init__(self, target: PreTrainedModel, draft: PreTrainedModel):
        super().__init__(target)
        if draft.device != target.device:
            raise ValueError(f"draft on {draft.device} but target on {target.device}")
        self.draft = draft

    def _begin(self, prompts, max_new_tokens):
        super()._begin(prompts, max_new_tokens)
        self.draft_cache = RowCache(self.draft, self.pad, self.capacity)

    def _select(self, rows):
        super()._select(rows)
        self.draft_cache.select(rows)

    def _prefill(self, stats):
        first = super()._prefill(stats)
        self._feed_prompts(self.draft_cache, stats, "draft")  # the pending first token is caught up next round
        return first

    def _catch_up(self, stats: GenerationStats) -> torch.Tensor:
        """Feed the draft the committed tokens its cache lacks (1 or 2 per row, padded); each row's last logits."""
        lacking = [n - h for n, h in zip(self.length, self.draft_cache.held, strict=True)]
        width, rows = max(lacking), len(lacking)
        start = torch.tensor(self.draft_cache.held, device=self.device)[:, None]
        positions = start + torch.arange(width, device=self.device)
        ids = self.committed.gather(1, positions.clamp_max(self.capacity - 1))
        logits = self._timed("draft", self.draft_cache.feed, ids, positions, causal(rows, width, self.device))
        stats.draft_forwards += 1
        last = torch.tensor(lacking, device=self.device)[:, None, None] - 1
        self.draft_ok = finite(logits)
        self.draft_cache.hold(self.length)
        return logits.gather(1, last.expand(-1, -1, logits.shape[-1]))[:, 0]


class BatchedLinearDecoder(_BatchedSpeculative):
    """Every row drafts K tokens greedily (K draft forwards for the whole batch, the catch-up included), one target
    forward verifies all rows; each keeps its longest agreeing prefix plus the target's next token."""

    name = "linear"

    def __init__(self, target: PreTrainedModel, draft: PreTrainedModel, k: int):
        super().__init__(target, draft)
        LinearDecoder.validate(k)
        self.k = k

    @property
    def lookahead(self) -> int:
        return self.k + 1

    def params(self) -> dict:
        return {"k": self.k, "fallback": False}

    def _round(self, stats):
        rows, k = len(self.length), self.k
        logits = self._catch_up(stats)
        drafts = [logits.argmax(-1)]
        base = torch.tensor(self.length, device=self.device)[:, None]
        for i in range(k - 1):
            logits = self._timed("draft", self.draft_cache.feed, drafts[-1][:, None], base + i,
                                 causal(rows, 1, self.device))[:, -1]
            stats.draft_forwards += 1
            self.draft_ok = self.draft_ok & finite(logits)
            drafts.append(logits.argmax(-1))
            self.draft_cache.hold([h + 1 for h in self.draft_cache.held])
        drafts = torch.stack(drafts, 1)  # (B, K)
        pending, position = self._pending()
        self.target_cache.hold([n - 1 for n in self.length])
        fed = torch.cat([pending, drafts], 1)
        positions = position + torch.arange(k + 1, device=self.device)
        logits = self._timed("target", self.target_cache.feed, fed, positions, causal(rows, k + 1, self.device))
        stats.target_forwards += 1
        predicted = logits.argmax(-1)  # (B, K + 1)
        agree = (predicted[:, :-1] == drafts).long().cumprod(1).sum(1)
        emitted = torch.cat([drafts, predicted.gather(1, agree[:, None])], 1)
        emitted.scatter_(1, agree[:, None], predicted.gather(1, agree[:, None]))
        values = self._read(torch.cat([agree[:, None], emitted], 1),
                            {"target": finite(logits), "draft": self.draft_ok}, stats)
        accepted = values[:: k + 2]
        tokens = [values[r * (k + 2) + 1 : r * (k + 2) + 2 + a] for r, a in enumerate(accepted)]
        old = list(self.length)
        self._commit(emitted, [a + 1 for a in accepted])
        self.target_cache.hold([n + a for n, a in zip(old, accepted, strict=True)])
        self.draft_cache.hold([min(h, n + a) for h, n, a in zip(self.draft_cache.held, old, accepted, strict=True)])
        return tokens, [k] * rows, accepted


class BatchedTreeDecoder(_BatchedSpeculative):
    """One draft token tree per row (depth D, branch B, threshold tau, node cap), grown level by level with one draft
    forward per level for the whole batch, and one target forward verifying every row's tree.

    Each row's tree is a `TokenTree` (growth, pruning, acceptance as at batch 1); the rows' levels take the same slots,
    so a level is fed as one (B, slots) block with its dead slots. With `lookup`, each row's tree also holds its
    context's n-gram continuations (and `lookup_first` stops a row's draft levels where its chain starts with the
    draft's top choice), as `TreeDecoder` does. For verification the compacted trees are padded to the largest row's
    node count; a pad node sees itself only and is never accepted. Each row's accepted path is then gathered in
    place in both caches.
    """

    name = "tree"
    counts_nodes = True

    def __init__(self, target: PreTrainedModel, draft: PreTrainedModel, depth: int, branch: int,
                 threshold: float = 0.0, max_nodes: int = 1_000_000, lookup: int = 0, ngram: int = 3,
                 lookup_first: bool = False, lookup_branches: int = 1):
        super().__init__(target, draft)
        TreeDecoder.validate(depth, branch, threshold, max_nodes, lookup, ngram, lookup_first, lookup_branches)
        self.depth, self.branch, self.threshold, self.max_nodes = depth, branch, threshold, max_nodes
        self.lookup, self.ngram, self.lookup_first, self.lookup_branches = lookup, ngram, lookup_first, lookup_branches
        self._capacity = max_tree_nodes(depth, branch, max_nodes)
        self._slots = sum(level_slots(depth, branch, self._capacity))
        self._reach = max(depth, lookup)  # the deepest node a round can accept

    @property
    def lookahead(self) -> int:
        return self._slots + self.lookup * self.lookup_branches + 1

    def params(self) -> dict:
        lookup = {"lookup": self.lookup, "ngram": self.ngram, "lookup_first": self.lookup_first,
                  "lookup_branches": self.lookup_branches} if self.lookup else {}
        return {"depth": self.depth, "branch": self.branch, "threshold": self.threshold, "max_nodes": self.max_nodes,
                **lookup, "fallback": False}

    def _begin(self, prompts, max_new_tokens):
        super()._begin(prompts, max_new_tokens)
        reserve = self.lookup * self.lookup_branches
        self.trees = [TokenTree(self._capacity, self.device, reserve, self._slots) for _ in prompts]

    def _select(self, rows):
        super()._select(rows)
        self.trees = [self.trees[r] for r in rows]

    def _round(self, stats):
        chains = self._chains()
        fed = self._grow(stats, chains)
        for tree, (tokens, counts, _) in zip(self.trees, chains or [], strict=False):
            tree.graft_all(tokens, counts)  # after the draft's levels: never fed to the draft
        counts = torch.stack([tree.live[: tree.size].sum() for tree in self.trees]).tolist()  # one host read
        sizes = [tree.compact(n) for tree, n in zip(self.trees, counts, strict=True)]
        width, roots = max(sizes), [n - 1 for n in self.length]
        self.target_cache.hold(roots)
        logits = self._timed("target", self.target_cache.feed, *self._padded_trees(width, sizes))
        stats.target_forwards += 1
        target_next = logits.argmax(-1)
        rows = [self._accept_row(tree, target_next[r, :n], fed, width)
                for r, (tree, n) in enumerate(zip(self.trees, sizes, strict=True))]
        paths, counts, emitted = (torch.stack(part) for part in zip(*rows, strict=True))
        values = self._read(torch.cat([counts, emitted], 1), {"target": finite(logits), "draft": self.draft_ok},
                            stats)
        per_row = 3 + self._reach
        accepted, in_draft = values[::per_row], values[1::per_row]
        tokens = [values[r * per_row + 2 : r * per_row + 3 + a] for r, a in enumerate(accepted)]
        self.target_cache.keep_path(paths, [a + 1 for a in accepted])
        self.draft_cache.hold(roots)  # the draft holds the root too; a node's draft slot is root + its tree slot
        draft_slots = torch.stack([tree.slot[:width] for tree in self.trees]).gather(1, paths)
        self.draft_cache.keep_path(draft_slots, in_draft)
        self._commit(emitted, [a + 1 for a in accepted])
        return tokens, [n - 1 for n in sizes], accepted

    def _chains(self) -> list[Continuations] | None:
        """With lookup: per row, its context's n-gram continuations (tokens, real counts), as at batch 1."""
        if not self.lookup:
            return None
        return [retrieve_continuations(self.committed[r, :n], self.ngram, self.lookup, self.lookup_branches)
                for r, n in enumerate(self.length)]

    def _grow(self, stats: GenerationStats, chains: list | None) -> int:
        """Grow every row's tree, one batched draft forward per level; the last slot fed to the draft (0: none).

        Growth stops once every row's level is empty or its tree full, or (`lookup_first`) its first lookup chain
        starts with the draft's top choice; a row stopped earlier than others grows dead levels (`allow` False).
        """
        logits = self._catch_up(stats)[:, None]  # (B, 1, vocab): the root's
        levels = [tree.reset(self.committed[r, n - 1]) for r, (tree, n) in enumerate(zip(self.trees, self.length,
                                                                                         strict=True))]
        fed, base, allow = 0, torch.tensor(self.length, device=self.device)[:, None] - 1, [None] * len(levels)
        for d in range(1, self.depth + 1):
            levels = [tree.grow(level, logits[r], self.branch, self.threshold, allow[r])
                      for r, (tree, level) in enumerate(zip(self.trees, levels, strict=True))]
            if d == self.depth or levels[0].size == 0:
                break
            if d == 1 and chains is not None and self.lookup_first:
                allow = [~((counts[0] > 0) & (tokens[0, 0] == tree.tokens[level.start]) & tree.live[level.start])
                         for tree, level, (tokens, counts, _) in zip(self.trees, levels, chains, strict=True)]
            stops = [tree.stalled(level) if a is None else tree.stalled(level) | ~a
                     for tree, level, a in zip(self.trees, levels, allow, strict=True)]
            if all(torch.stack(stops).tolist()):
                break  # a host read per level: no row grows further
            level = levels[0]  # every row's level takes the same slots
            ids = torch.stack([tree.tokens[level.start : level.end] for tree in self.trees])
            block = torch.stack([tree.block(level, 1) for tree in self.trees])
            logits = self._draft_level(ids, base + d, block, stats)
            fed = level.end - 1
        return fed

    def _draft_level(self, ids: torch.Tensor, position: torch.Tensor, block: torch.Tensor,
                     stats: GenerationStats) -> torch.Tensor:
        """One draft forward over a level (B, slots), each node seeing its ancestors among this round's tree slots."""
        logits = self._timed("draft", self.draft_cache.feed, ids, position.expand(-1, ids.shape[1]), block)
        stats.draft_forwards += 1
        self.draft_ok = self.draft_ok & finite(logits)
        return logits

    def _padded_trees(self, width: int, sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every row's compacted tree padded to `width` nodes: ids, positions and blocks (a pad node sees itself)."""
        node = torch.arange(width, device=self.device)
        ids = torch.stack([tree.tokens[:width] for tree in self.trees])
        depth = torch.stack([tree.depth[:width] for tree in self.trees])
        real = node[None] < torch.tensor(sizes, device=self.device)[:, None]
        positions = torch.tensor(self.length, device=self.device)[:, None] - 1 + depth * real
        ancestors = torch.stack([tree.ancestors[:width, :width] for tree in self.trees])
        block = (ancestors & real[:, None, :] & real[:, :, None]) | torch.eye(width, dtype=torch.bool,
                                                                              device=self.device)
        return ids, positions, block

    def _accept_row(self, tree: TokenTree, target_next: torch.Tensor, fed: int, width: int) -> tuple:
        """A row's accepted path (padded to `width`), (accepted, path nodes the draft holds), emitted tokens (padded
        to the deepest acceptable node + 1)."""
        path, accepted, bonus = tree.accept(target_next)
        n = path.numel()
        emitted = tree.emitted(path, accepted, bonus)[: self._reach + 1]
        in_draft = ((tree.slot[path] <= fed) & (torch.arange(n, device=self.device) <= accepted)).sum()
        return (torch.cat([path, path.new_zeros(width - n)]), torch.stack([accepted, in_draft]),
                torch.cat([emitted, emitted.new_zeros(self._reach + 1 - emitted.numel())]))


BATCHED = {cls.name: cls for cls in (BatchedARDecoder, BatchedLinearDecoder, BatchedTreeDecoder)}
# Knobs of the batch-1 method files that batched decoding runs only at these values (trees of draft and lookup nodes,
# linear drafting without the confidence stop); `fallback` (a batch-1 time measurement per round) is not applied.
BATCH_1_ONLY = {"confidence": 0.0, "recycle": 0, "budget_split": False, "split_cost": True, "budget": "fixed"}
IGNORED = ("fallback",)


def check_batched(label: str, name: str, params: dict) -> None:
    """Raise ValueError unless method `name` with `params` runs at batch_size > 1 (names the supported ones)."""
    if name not in BATCHED:
        named = repr(label) if label == name else f"{label!r} ({name})"
        raise ValueError(f"method {named} does not run at batch_size > 1; batched methods: "
                         f"{', '.join(BATCHED)} (HF assisted generation and prompt lookup: batch_size=1 only)")
    for key, only in BATCH_1_ONLY.items():
        if params.get(key, only) != only:
            raise ValueError(f"method {label!r}: {key}={params[key]!r} runs at batch_size=1 only (batched: "
                             f"{key}={only!r})")


def build_batched(name: str, target: PreTrainedModel, draft: PreTrainedModel | None = None,
                  **params) -> BatchedDecoder:
    """The batched decoder of method `name`, from its method file's knobs (batch-1-only knobs at their defaults)."""
    check_batched(name, name, params)
    knobs = {k: v for k, v in params.items() if k not in BATCH_1_ONLY and k not in IGNORED}
    return BATCHED[name](target, **knobs) if name == "ar" else BATCHED[name](target, draft, **knobs)


def _done(tokens: list[int], max_new_tokens: int, stops: frozenset[int]) -> bool:
    return len(tokens) >= max_new_tokens or any(t in stops for t in tokens)


def _cut(tokens: list[int], max_new_tokens: int, stops: frozenset[int]) -> list[int]:
    """A row's tokens cut after its first stop token and at `max_new_tokens`."""
    end = next((i + 1 for i, t in enumerate(tokens) if t in stops), len(tokens))
    return tokens[: min(end, max_new_tokens)]
