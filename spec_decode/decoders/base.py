"""The decoder interface: prompt ids in; generated ids and per-round statistics out."""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, fields, replace

import torch
from transformers import DynamicCache, PreTrainedModel

from spec_decode import kv, static
from spec_decode.sampling import GREEDY, Sampling

StopIds = int | Collection[int] | None  # the token(s) that end a generation


@dataclass
class GenerationStats:
    """What one generation did, round by round (a round = one target verification forward)."""

    emitted_per_round: list[int] = field(default_factory=list)
    round_times_s: list[float] = field(default_factory=list)
    drafted_per_round: list[int] = field(default_factory=list)
    accepted_per_round: list[int] = field(default_factory=list)
    tree_nodes_per_round: list[int] = field(default_factory=list)
    cache_length_per_round: list[int] = field(default_factory=list)
    target_forward_s_per_round: list[float] = field(default_factory=list)
    draft_forward_s_per_round: list[float] = field(default_factory=list)
    trace: list[dict] = field(default_factory=list)
    rows_per_round: list[int] = field(default_factory=list)  # batched runs: rows each round decoded (totals above)
    compressions: int = 0
    fallback_rounds: int = 0  # rounds that were plain AR steps chosen by the fallback (not the method's round)
    target_forwards: int = 0
    draft_forwards: int = 0
    ttft_s: float = 0.0
    total_s: float = 0.0

    @property
    def rounds(self) -> int:
        return len(self.emitted_per_round)

    @property
    def drafted(self) -> int:
        return sum(self.drafted_per_round)

    @property
    def accepted(self) -> int:
        return sum(self.accepted_per_round)

    def to_dict(self) -> dict:
        return asdict(self) | {"rounds": self.rounds, "drafted": self.drafted, "accepted": self.accepted}

    @classmethod
    def joined(cls, parts: list[GenerationStats]) -> GenerationStats:
        """The statistics of consecutive generations (a conversation's turns): per-round lists concatenated, counts
        and times summed (`ttft_s` = the turns' times to their first tokens together)."""
        out = cls()
        for f in fields(cls):
            values = [getattr(p, f.name) for p in parts]
            setattr(out, f.name, sum(values, []) if isinstance(values[0], list) else sum(values))
        return out

    def add(self, done: Round, seconds: float, cache_length: int | None, forward_s: dict | None) -> None:
        """Record one round: what it emitted and drafted, its time, and (when known) cache size and forward times."""
        self.emitted_per_round.append(len(done.tokens))
        self.drafted_per_round.append(done.drafted)
        self.accepted_per_round.append(done.accepted)
        if done.nodes is not None:
            self.tree_nodes_per_round.append(done.nodes)
        self.round_times_s.append(seconds)
        if cache_length is not None:
            self.cache_length_per_round.append(cache_length)
        if forward_s is not None:
            self.target_forward_s_per_round.append(forward_s["target"])
            self.draft_forward_s_per_round.append(forward_s["draft"])


@dataclass
class Round:
    """What one round emitted (target-verified tokens, bonus last) and how much draft it verified and accepted."""

    tokens: list[int]
    drafted: int = 0
    accepted: int = 0
    nodes: int | None = None  # tree methods: nodes verified (root excluded)
    drafted_upto: list[int] | None = None  # drafted_upto[d]: draft nodes at depth <= d (default: a chain)

    def cut(self, emitted: int) -> Round:
        """The round as if it had emitted only its first `emitted` tokens (an EOS inside it): all were accepted."""
        if emitted >= len(self.tokens):
            return self
        upto = self.drafted_upto
        drafted = upto[min(emitted, len(upto) - 1)] if upto else min(self.drafted, emitted)
        return replace(self, tokens=self.tokens[:emitted], accepted=min(self.accepted, emitted), drafted=drafted)


class NonFiniteLogitsError(RuntimeError):
    """A model produced NaN or infinite logits; decoding stopped."""


@dataclass
class Generation:
    """Generated token ids (prompt excluded) and the statistics of producing them."""

    tokens: list[int]
    stats: GenerationStats


class Clock:
    """Wall clock that waits for the device before reading the time (CUDA kernels are asynchronous)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def forward(
    model: PreTrainedModel,
    ids: torch.Tensor,
    cache: DynamicCache,
    position_ids: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    last_only: bool = False,
    features: torch.Tensor | None = None,
    keep_hidden: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """One cached forward of a 1-D run of token ids; returns logits `(len(ids) or 1, vocab)`, and with
    `keep_hidden` also the last hidden states `(len(ids), hidden)`. `features`: a feature draft's input states."""
    extra = {} if features is None else {"features": features[None]}
    out = model(
        input_ids=ids[None],
        cache=cache,
        position_ids=None if position_ids is None else position_ids[None],
        attention_mask=mask,
        use_cache=True,
        logits_to_keep=1 if last_only else 0,
        output_hidden_states=keep_hidden,
        **extra,
    )
    return (out.logits[0], out.hidden_states[-1][0]) if keep_hidden else out.logits[0]


class Fallback:
    """Run the method's round or a plain AR step, whichever has cost fewer seconds per token.

    The faster kind runs; the other is re-tried after `probe` rounds, an interval that doubles (up to `max_interval`)
    while the re-try keeps losing and resets when it wins. Seconds come from the decode loop's round times; a kind's
    cost is its smoothed seconds over its smoothed tokens (not a mean of per-round ratios, which would rate a kind
    that emits many tokens in a few rounds and one in most far worse than its total time per token). The first
    speculative round after AR steps (or a generation's first) is not measured when `settle` (methods with a draft:
    that round carries the draft's catch-up). Costs and the probe interval carry over between generations (a new
    one starts with the best kind), so a text where speculation loses does not pay for re-learning it every turn;
    `reset` forgets them.
    """

    def __init__(self, probe: int = 8, max_interval: int = 64, smoothing: float = 0.3, settle: bool = True):
        self.probe, self.max_interval, self.smoothing, self.settle = probe, max_interval, smoothing, settle
        self.reset()

    def reset(self) -> None:
        """Forget every measurement: the next round speculates."""
        self.sums: dict[bool, tuple[float, float] | None] = {True: None, False: None}  # smoothed seconds, tokens
        self.best, self.speculate, self.last = True, True, None
        self.interval, self.since = self.probe, 0

    @property
    def cost(self) -> dict[bool, float | None]:
        """Seconds per token of each kind (True: speculative, False: AR); None before its first measurement."""
        return {kind: None if sums is None else sums[0] / sums[1] for kind, sums in self.sums.items()}

    def begin(self) -> None:
        """A new generation: keep the measured costs and the probe schedule, run the best kind from the start."""
        self.speculate, self.last = self.best, None

    def record(self, speculated: bool, seconds: float, tokens: int) -> None:
        """Take one round's time and emitted tokens; set `speculate` for the next round."""
        settling = self.settle and speculated and self.last is not True
        self.last = speculated
        if speculated == self.best:
            self.since += 1
        if settling:
            return  # the next round speculates again, measured
        tokens = max(tokens, 1)
        old = self.sums[speculated]
        fresh = old is None or speculated != self.best  # a first or a probing measurement replaces a stale estimate
        sums = (seconds, tokens) if fresh else (old[0] + self.smoothing * (seconds - old[0]),
                                                old[1] + self.smoothing * (tokens - old[1]))
        self.sums[speculated] = sums
        self.speculate = self._choose(speculated)

    def _choose(self, measured: bool) -> bool:
        """The kind of the next round, after a measured round of kind `measured`."""
        other, cost = not self.best, self.cost
        if cost[other] is None:
            return other  # the first AR sample
        if measured == other:  # a probe: it wins and becomes the best, or loses and waits twice as long
            won = cost[other] < cost[self.best]
            self.best = other if won else self.best
            self.interval = self.probe if won else min(2 * self.interval, self.max_interval)
            self.since = 0
        elif cost[self.best] > cost[other]:  # the best got slower than the other's last estimate
            self.best, self.interval, self.since = other, self.probe, 0
        return self.best if self.since < self.interval else not self.best


class Decoder:
    """Decoding of `target`, batch size 1: greedy, or sampled per `sampling` (every method emits exactly what AR
    would: the same tokens when greedy, the same distribution when sampling). Subclasses implement `_round` and
    `lookahead`.

    With `fallback` (speculative methods), a round may instead be a plain AR step, chosen by a `Fallback` from the
    measured round times, so that a text where speculation does not pay costs about what AR costs.

    With `cache_size`, the caches are StreamingLLM sink caches: each query sees the first `sink` positions
    and its last `window` positions, window = cache_size - sink - lookahead + 1, so that a whole round
    (`lookahead` tokens fed at once) fits without the cache ever holding more than `cache_size` slots.
    """

    name = "decoder"
    profile = False  # when True, time every model forward (per round, target and draft) without changing tokens
    static_cache = False  # pre-allocated caches, feeds padded to fixed sizes (spec_decode/static.py); same tokens
    compile = False  # CUDA: the fixed-size feeds run through torch.compile (CUDA graphs); implies static_cache
    fallback: bool | None = None  # speculative methods: may take plain AR steps where they are faster (None: no knob)
    counts_nodes = False  # tree methods: every round records its verified nodes (an AR step: 0)
    drafts = False  # a draft model catches up in the first speculative round after AR steps
    keeps_hidden = False  # every forward leaves its last hidden states in `last_hidden` (feature drafts read them)
    sampling: Sampling = GREEDY  # temperature / top-p / top-k; each sampled generation seeds `generator` afresh

    def __init__(self, target: PreTrainedModel, cache_size: int | None = None, sink: int = 4):
        self.target = target
        self.device = target.device
        self.clock = Clock(self.device)
        self.cache_size, self.sink = cache_size, sink
        self._forward_s = {"target": 0.0, "draft": 0.0}
        self.last_hidden: dict[str, torch.Tensor] = {}
        self._static, self._static_caches, self._compiled = False, {}, None
        self.chooser = Fallback(settle=self.drafts)
        self.generator = torch.Generator(self.device)

    @property
    def lookahead(self) -> int:
        """The most tokens one round feeds the target at once (1 for AR)."""
        return 1

    @property
    def draft_round_feed(self) -> int:
        """The most tokens one round can feed the draft past the committed text (sizes a static draft cache)."""
        return self.lookahead

    @property
    def window(self) -> int | None:
        return None if self.cache_size is None else self.cache_size - self.sink - self.lookahead + 1

    @staticmethod
    def validate(cache_size: int | None = None, sink: int = 4) -> None:
        """Raise ValueError for knobs outside their range."""
        check_streaming(cache_size, sink, lookahead=1, needed=1)

    def params(self) -> dict:
        """The method's knobs, as recorded in results."""
        fallback = {} if self.fallback is None else {"fallback": self.fallback}
        return fallback if self.cache_size is None else fallback | {"cache_size": self.cache_size, "sink": self.sink,
                                                   "window": self.window}

    @torch.inference_mode()
    def generate(self, prompt_ids: torch.Tensor | list[int], max_new_tokens: int,
                 eos_token_id: StopIds = None, seed: int = 0) -> Generation:
        """Continue `prompt_ids` until a stop token (`eos_token_id`: one id or several, e.g. EOS and the chat
        end-of-turn token) or `max_new_tokens` tokens; a sampled generation draws from a generator seeded `seed`."""
        prompt = torch.as_tensor(prompt_ids, dtype=torch.long, device=self.device).reshape(-1)
        if prompt.numel() < 1:
            raise ValueError("the prompt must hold at least one token")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        stats = GenerationStats()
        self.generator.manual_seed(seed)
        start = self.clock.now()
        self._begin(prompt, max_new_tokens)
        tokens = [self._prefill(prompt, stats)]
        stats.ttft_s = self.clock.now() - start
        stops = stop_set(eos_token_id)
        self.chooser.begin()
        while not _finished(tokens, max_new_tokens, stops):
            round_start = self.clock.now()
            self._forward_s = {"target": 0.0, "draft": 0.0}
            self._evict()
            speculate = not self.fallback or self.chooser.speculate
            remaining = max_new_tokens - len(tokens)
            new = self._round(remaining, stats) if speculate else self._fallback_round(remaining, stats)
            new = new.cut(len(truncate_at_eos(new.tokens, stops)))
            tokens.extend(new.tokens)
            cache_length = kv.cache_length(self.target_cache) if self.cache_size is not None else None
            seconds = self.clock.now() - round_start
            stats.add(new, seconds, cache_length, self._forward_s if self.profile else None)
            self._observe(new, seconds, stats)
            if self.fallback:
                self.chooser.record(speculate, seconds, len(new.tokens))
                stats.fallback_rounds += not speculate
        stats.compressions = getattr(self.target_cache, "compressions", 0)
        stats.total_s = self.clock.now() - start
        return Generation(tokens, stats)

    def reset_state(self) -> None:
        """Forget what earlier generations taught (the fallback's costs; the benchmark calls this after warm-up)."""
        self.chooser.reset()

    def _observe(self, new: Round, seconds: float, stats: GenerationStats) -> None:
        """After every round (host side, already synced): its measured seconds, for methods that learn costs."""

    def _begin(self, prompt: torch.Tensor, max_new_tokens: int) -> None:
        """Reset per-generation state: a fresh target cache and the committed-token buffer."""
        self._static = self.static_cache or self.compile
        if self._static:
            self._begin_static(prompt.numel() + max_new_tokens)
        self.target_cache = self._new_cache(self.target)
        self.committed = torch.empty(prompt.numel() + max_new_tokens + 1, dtype=torch.long, device=self.device)
        self.committed[: prompt.numel()] = prompt
        self.length = self._origin = prompt.numel()
        if not self.sampling.greedy:  # output position i draws its token from uniform i, whichever round decides it
            self._uniforms = torch.rand(max_new_tokens + 1, generator=self.generator, dtype=torch.float64,
                                        device=self.device)

    def _begin_static(self, tokens: int) -> None:
        """Static mode: the block sizes, the cache size (`tokens` + a round + its padding), compiled models."""
        static.check(self)
        self._blocks = static.block_sizes(self.lookahead)
        self._slots = tokens + max(self.lookahead, self.draft_round_feed) + self._blocks[-1]
        if self.compile and self._compiled is None:
            models = (self.target, getattr(self, "draft", None))
            self._compiled = {m: static.compile_model(m) for m in models if m is not None}

    def _new_cache(self, model: PreTrainedModel | None = None):
        """An empty cache for `model`: static (reused across generations) or dynamic, a sink cache when streaming."""
        if self._static:
            role = "target" if model is self.target else "draft"
            self._static_caches[role] = static.cache_for(self._static_caches.get(role), model, self._slots)
            return self._static_caches[role]
        return kv.new_cache(self.sink, self.window) if self.cache_size is not None else kv.new_cache()

    def _evict(self) -> None:
        """Before a round: drop the target-cache slots no query of this round or later can see."""
        if self.cache_size is not None:
            self.target_cache.evict_before(self.length - 1)

    def _commit(self, tokens: torch.Tensor) -> None:
        """Append emitted tokens to the committed sequence."""
        self.committed[self.length : self.length + tokens.numel()] = tokens
        self.length += tokens.numel()

    def _feed(self, model: PreTrainedModel, cache: DynamicCache, ids: torch.Tensor, start: int,
              positions: torch.Tensor | None = None, block: torch.Tensor | None = None,
              last_only: bool = False, features: torch.Tensor | None = None) -> torch.Tensor:
        """Feed `ids` at `positions` (default start, start+1, ...) seeing `block` (default causal) of the newest;
        `features`: a feature draft's input states, one row per id (dynamic caches only)."""
        if self._static:
            return self._feed_static(model, cache, ids, start, positions, block, last_only)
        if block is None and self.cache_size is None:
            return self._forward(model, ids, cache, None, None, last_only, features=features)
        q = ids.numel()
        if positions is None:
            positions = torch.arange(start, start + q, device=self.device)
        if block is None:
            block = self._causal_block(q, start)
        mask = kv.attention_mask(cache, positions, block, model.dtype)
        return self._forward(model, ids, cache, positions, mask, last_only, features=features)

    def _causal_block(self, q: int, start: int) -> torch.Tensor:
        """Each of q queries fed from `start` sees itself and the earlier ones; when streaming, only the sink and
        those inside its window (a prompt chunk can be longer than the window)."""
        block = torch.ones(q, q, dtype=torch.bool, device=self.device).tril_()
        if self.cache_size is None:
            return block
        positions = torch.arange(start, start + q, device=self.device)
        return block & kv.in_window(positions, positions, self.sink, self.window)

    def _feed_static(self, model: PreTrainedModel, cache: kv.StaticKVCache, ids: torch.Tensor, start: int,
                     positions: torch.Tensor | None, block: torch.Tensor | None, last_only: bool) -> torch.Tensor:
        """`_feed` into a static cache: padded to a block size (compiled) unless it is the prompt; real rows out."""
        q = ids.numel()
        if positions is None:
            positions = torch.arange(start, start + q, device=self.device)
        if block is None:
            block = self._causal_block(q, start)
        rows = static.rows_for(q, self._blocks) if cache.length else q  # the prompt: eager, unpadded
        compiled = self._compiled is not None and rows in self._blocks and cache.length > 0
        keep_last = last_only and rows == q and not compiled  # compiled graphs always keep every row
        mask = kv.attention_mask(cache, positions, block, model.dtype, rows)
        logits = self._forward(model, static.pad(ids, rows), cache, static.pad(positions, rows), mask, keep_last,
                               compiled)
        cache.set_length(cache.length + q)
        if not keep_last:
            logits = logits[q - 1 : q] if last_only else logits[:q]
        return logits.clone() if compiled else logits

    def _forward(self, model: PreTrainedModel, ids: torch.Tensor, cache: DynamicCache,
                 positions: torch.Tensor | None, mask: torch.Tensor | None, last_only: bool,
                 compiled: bool = False, features: torch.Tensor | None = None) -> torch.Tensor:
        """One model forward (its compiled version when `compiled`), timed per model when profiling."""
        run = model
        if compiled:
            torch.compiler.cudagraph_mark_step_begin()  # the previous replay's outputs are no longer read
            run = self._compiled[model]
        role = "target" if model is self.target else "draft"
        begin = self.clock.now() if self.profile else 0.0
        logits = forward(run, ids, cache, positions, mask, last_only, features, self.keeps_hidden)
        if self.keeps_hidden:
            logits, self.last_hidden[role] = logits
        if self.profile:
            self._forward_s[role] += self.clock.now() - begin
        return logits

    def _feed_chunked(self, model: PreTrainedModel, cache: DynamicCache, ids: torch.Tensor, start: int) -> torch.Tensor:
        """Feed a run of tokens (in chunks of `lookahead` when streaming); the logits after the last one."""
        chunk = ids.numel() if self.cache_size is None else self.lookahead
        for offset in range(0, ids.numel(), chunk):
            if self.cache_size is not None:
                cache.evict_before(start + offset)
            logits = self._feed(model, cache, ids[offset : offset + chunk], start + offset, last_only=True)
        return logits[-1]

    def _prefill(self, prompt: torch.Tensor, stats: GenerationStats) -> int:
        """Run the target over the prompt; commit and return its first token."""
        logits = self._feed_chunked(self.target, self.target_cache, prompt, 0)
        self._prefilled(prompt, logits)
        first = self._pick(logits)
        stats.target_forwards += 1
        self._commit(first[None])
        return self._read(first[None], {"target": finite(logits)}, 0)[0]

    def _prefilled(self, ids: torch.Tensor, logits: torch.Tensor) -> None:
        """After a forward that verifies nothing (the prefill, an AR step): `ids` fed and the last logits, for
        decoders that learn from every target forward (none by default)."""

    def _round(self, remaining: int, stats: GenerationStats) -> Round:
        """One round: commit its tokens on the device and return them (read to the host once)."""
        raise NotImplementedError

    def _target_step(self, stats: GenerationStats) -> Round:
        """One plain autoregressive step: feed the pending token, commit the target's next token."""
        pending = self.committed[self.length - 1 : self.length]
        logits = self._feed(self.target, self.target_cache, pending, self.length - 1)[-1]
        self._prefilled(pending, logits)
        stats.target_forwards += 1
        nxt = self._pick(logits)
        self._commit(nxt[None])
        return Round(self._read(nxt[None], {"target": finite(logits)}, stats.rounds + 1))

    def _pick(self, logits: torch.Tensor, ahead: torch.Tensor | int = 0) -> torch.Tensor:
        """The target's token after each row of `logits`, which decide the output positions `ahead` of the next one:
        its argmax, or its processed distribution's inverse CDF at that position's uniform. Every method so emits
        exactly the tokens AR sampling emits from the same seed (given the same logits)."""
        if self.sampling.greedy:
            return logits.argmax(-1)
        index = (self.length - self._origin + torch.as_tensor(ahead, device=self.device)).clamp_max(
            self._uniforms.numel() - 1)
        return self.sampling.pick(logits, self._uniforms[index])

    def _fallback_round(self, remaining: int, stats: GenerationStats) -> Round:
        """The round run where the method's own rounds cost more per token: the cheapest round that may still pay."""
        return self._ar_round(stats)

    def _ar_round(self, stats: GenerationStats) -> Round:
        """A plain AR step as a round of this method (tree methods: 0 nodes verified)."""
        step = self._target_step(stats)
        return replace(step, nodes=0) if self.counts_nodes else step

    @staticmethod
    def _read(values: torch.Tensor, checks: dict[str, torch.Tensor], round_index: int) -> list[int]:
        """The round's one blocking host read: integer `values`, with each model's logits-finite flag folded in."""
        flags = torch.stack(list(checks.values())).long()
        out = torch.cat([flags, values.long()]).tolist()
        for model, ok in zip(checks, out, strict=False):
            if not ok:
                raise NonFiniteLogitsError(
                    f"the {model} model produced NaN/inf logits in round {round_index} of this generation "
                    f"(round 0 = prefill); try dtype=float32 or dtype=bfloat16")
        return out[len(checks):]


def finite(logits: torch.Tensor) -> torch.Tensor:
    """Bool scalar on the device: no NaN or +inf, and no row all -inf (read later with the round's other values).

    A row's max carries any NaN or +inf in it; one reduction pass is ~10x cheaper than `isfinite().all()` on CPU.
    """
    return logits.amax(-1).isfinite().all()


def check_streaming(cache_size: int | None, sink: int, lookahead: int, needed: int) -> None:
    """Raise ValueError unless the cache holds the sink, one round of `lookahead` tokens, and a `needed` window."""
    if cache_size is None:
        return
    if sink < 0:
        raise ValueError(f"sink must be >= 0, got {sink}")
    if cache_size - sink - lookahead + 1 < needed:
        raise ValueError(f"cache_size {cache_size} too small: sink {sink} + a round of {lookahead} tokens "
                         f"needs cache_size >= {sink + lookahead + needed - 1}")


def check_flag(name: str, value) -> None:
    """Raise ValueError unless `value` is a bool."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


def check_count(name: str, value, minimum: int) -> None:
    """Raise ValueError unless `value` is an integer >= `minimum`."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def stop_set(eos_token_id: StopIds) -> frozenset[int]:
    """The stop tokens as a set: none, one id, or a collection of ids."""
    if eos_token_id is None:
        return frozenset()
    return frozenset([eos_token_id] if isinstance(eos_token_id, int) else eos_token_id)


def _finished(tokens: list[int], max_new_tokens: int, stops: frozenset[int]) -> bool:
    return len(tokens) >= max_new_tokens or tokens[-1] in stops


def truncate_at_eos(new: list[int], eos_token_id: StopIds) -> list[int]:
    """Cut a round's tokens just after the first stop token."""
    stops = stop_set(eos_token_id)
    return next((new[: i + 1] for i, token in enumerate(new) if token in stops), new)
