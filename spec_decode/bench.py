"""The benchmark protocol: one pair, the same prompts, AR as the reference, warm-up then timed repeats per method.

Every timed generation also records how much CPU other processes took meanwhile (spec_decode.machine).
"""

from __future__ import annotations

import gc
import itertools
import logging
import math
import resource
from dataclasses import dataclass, field

import psutil
import torch
from tqdm.auto import tqdm

from spec_decode import costmodel, machine, metrics, static
from spec_decode.data import Prompt, turn_ids
from spec_decode.decoders import Decoder, Generation, GenerationStats, build_decoder
from spec_decode.decoders.ar import AutoregressiveDecoder
from spec_decode.decoders.batched import BatchGeneration, build_batched
from spec_decode.models import ModelPair
from spec_decode.sampling import GREEDY, Sampling

log = logging.getLogger(__name__)


@dataclass
class Protocol:
    """How much to generate and how often; `interleave` times every method on a prompt before the next prompt.

    `busy_threshold`: other processes' CPU (cores) above which a timed region counts as busy; `strict_quiet`: then stop.
    """

    max_new_tokens: int = 128
    warmup: int = 10
    repeats: int = 3
    seed: int = 0
    profile: bool = False
    trace_rounds: int = 0
    interleave: bool = True
    static_cache: bool = False
    compile: bool = False
    busy_threshold: float = 0.1
    strict_quiet: bool = False
    adapt_threads: bool = False  # threads=null: fewer threads once others take cores (interleaved order)
    chat: bool = False  # a conversation's later turns are built with the tokenizer's chat template
    stop_token_ids: tuple[int, ...] | None = None  # tokens that end a turn; None: the tokenizer's EOS
    sampling: Sampling = GREEDY  # temperature > 0: every method samples; no AR reference to compare tokens with
    batch_size: int = 1  # > 1: prompts of similar length decoded together (greedy), timed per batch


@dataclass
class PromptBatch:
    """Prompts decoded together (batch_size > 1): the unit a batched run times; each row is compared with batch-1
    greedy AR on its prompt."""

    prompts: list[Prompt]
    indices: list[int]
    category = None  # a batch mixes categories; per-row categories are in `categories`
    turns: tuple = ()

    @property
    def categories(self) -> list[str | None]:
        return [p.category for p in self.prompts]


def in_batches(prompts: list[Prompt], size: int) -> list[PromptBatch]:
    """The prompts in batches of `size`, of similar lengths (sorted by length, stable), so that left padding wastes
    little of the batched prefill; a last, smaller batch is left out (the runner trims the prompts to a multiple)."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i].ids))
    return [PromptBatch([prompts[i] for i in order[start : start + size]], order[start : start + size])
            for start in range(0, len(prompts) - size + 1, size)]


@dataclass
class Measurement:
    """One method being measured: its decoder, its samples so far, and its budget calibration if any."""

    name: str
    decoder: Decoder
    calibration: dict | None = None
    samples: list[dict] = field(default_factory=list)
    draft: str | None = None  # the folder of the method entry's own draft, when it names one


@dataclass
class Reference:
    """AR's tokens for one prompt, the target's top-2 logits at each of them, and the dtype they were computed in."""

    tokens: list[int]
    top2: list[list[float]]
    dtype: str


def run_methods(pair: ModelPair, methods: dict[str, tuple[str, dict]], prompts: list[Prompt],
                protocol: Protocol) -> dict[str, dict]:
    """Measure every method (the first AR's tokens are the reference when greedy); label -> run record.

    Interleaved order (the default) runs every method on each prompt in turn, so slow drifts of the machine
    (clocks, other tenants) fall on all methods alike; sequential order measures one method after another.
    """
    if protocol.batch_size > 1:
        prompts = in_batches(prompts, protocol.batch_size)
    return (_interleaved if protocol.interleave else _sequential)(pair, methods, prompts, protocol)


def _sequential(pair: ModelPair, methods: dict[str, tuple[str, dict]], prompts: list[Prompt],
                protocol: Protocol) -> dict[str, dict]:
    runs, reference = {}, None
    with run_bar(methods, prompts, protocol) as bar:
        for label, (name, params) in methods.items():
            log.info("measuring %s %s", label, params)
            runs[label] = run_method(pair, name, params, prompts, protocol, reference, bar, label)
            if name == "ar" and reference is None and protocol.sampling.greedy:
                reference = {s["prompt"]: _reference(s, prompts[s["prompt"]], pair, protocol)
                             for s in runs[label]["samples"] if s["repeat"] == 0}
    return runs


def _interleaved(pair: ModelPair, methods: dict[str, tuple[str, dict]], prompts: list[Prompt],
                 protocol: Protocol) -> dict[str, dict]:
    """Each prompt's rounds (one per repeat) run every method once, in an order rotated by one each round; samples
    are compared with AR's tokens once the prompt's rounds are done, wherever AR ran in them. The machine's state
    is recorded before and after the whole, and after each prompt."""
    before, start = machine.state(), machine.counters()
    with run_bar(methods, prompts, protocol) as bar:
        measuring = {label: prepare(pair, name, params, prompts, protocol, bar, label)
                     for label, (name, params) in methods.items()}
        first_ar = next((m for m in measuring.values() if m.name == "ar"), None)
        _reset_memory(pair.target.device)
        for label, m in measuring.items():
            log.info("warming up %s %s", label, m.decoder.params())
            warm_up(m, pair, prompts, protocol, bar, label)
        bar.set_description("timed (interleaved)")
        per_prompt = [_interleaved_prompt(list(measuring.values()), first_ar, pair, p, prompt, protocol, bar)
                      for p, prompt in enumerate(prompts)]
    memory = _memory(pair.target.device) | {"shared_by_interleaved_methods": True}
    watched = _watched(before, start) | {"per_prompt": per_prompt, "shared_by_interleaved_methods": True}
    return {label: record(m, memory, watched) for label, m in measuring.items()}


def _interleaved_prompt(measuring: list[Measurement], first_ar: Measurement | None, pair: ModelPair, p: int,
                        prompt: Prompt, protocol: Protocol, bar: tqdm) -> dict:
    """One prompt's rounds, compared with the reference once all have run; the machine after them, other
    processes' CPU during them, and any round re-measured with fewer threads (`adapt_threads`)."""
    done, reference, start, adapted = [], None, machine.counters(), []

    def measured(m: Measurement, r: int) -> tuple[Measurement, dict]:
        sample = measure(m, pair, p, r, prompt, protocol, None)
        bar.update()
        return m, sample

    for r in range(protocol.repeats):
        order, round_start = rotated(measuring, p * protocol.repeats + r), machine.counters()
        samples = [measured(m, r) for m in order]
        change = _fewer_threads(round_start, protocol) if protocol.adapt_threads else None
        if change:  # the round ran while the machine changed: drop it, measure it again on the new thread count
            adapted.append(change | {"repeat": r, "discarded": [_drop(m, sample) for m, sample in samples]})
            bar.total += len(order)
            samples = [measured(m, r) for m in order]
        for m, sample in samples:
            if m is first_ar and r == 0 and protocol.sampling.greedy:
                reference = _reference(sample, prompt, pair, protocol)
        done += samples
    for m, sample in done:
        if isinstance(prompt, PromptBatch) or not (m is first_ar and sample["repeat"] == 0):
            sample |= compared(sample, reference)  # batch-1 AR is the reference of every batched row
    return {"prompt": p, **machine.state(), **machine.load(start, machine.counters()), "threads_reduced": adapted}


def _fewer_threads(round_start: machine.Counters, protocol: Protocol) -> dict | None:
    """When other processes took cores during the round, leave them those cores: torch's threads would otherwise
    spin against them (a 2-thread run on 2 cores with one busy ran 3-12x slower, unevenly across methods)."""
    measured = machine.load(round_start, machine.counters())
    others, threads = machine.lower_bound(measured), torch.get_num_threads()
    if others <= protocol.busy_threshold or threads == 1:
        return None
    fewer = max(1, min(threads - 1, machine.usable_cores() - math.ceil(others)))
    torch.set_num_threads(fewer)
    log.warning("other processes used %.2f cores during a timed round: torch threads %d -> %d", others, threads, fewer)
    return {"from_threads": threads, "to_threads": fewer, "other_cpu_cores": measured["other_cpu_cores"]}


def _drop(m: Measurement, sample: dict) -> dict:
    """Remove a sample from the method's samples (kept, without its tokens, in the prompt's record)."""
    m.samples.remove(sample)
    return {"method": m.name, "seconds": sample["seconds"], "new_tokens": sample["new_tokens"],
            "other_cpu_cores": sample["other_cpu_cores"]}


def rotated(order: list, shift: int) -> list:
    """`order` rotated left by `shift`: round i of an interleaved run starts with method i mod n."""
    shift %= max(len(order), 1)
    return order[shift:] + order[:shift]


def run_method(pair: ModelPair, name: str, params: dict, prompts: list[Prompt], protocol: Protocol,
               reference: dict[int, Reference] | None = None, bar: tqdm | None = None,
               label: str | None = None) -> dict:
    """Warm up, then time `repeats` generations per prompt; raw samples plus memory, machine load and the knobs used.

    `bar`: the run's progress bar (default: one for this method alone)."""
    if bar is None:
        with run_bar({name: (name, params)}, prompts, protocol) as own:
            return run_method(pair, name, params, prompts, protocol, reference, own, label)
    before, start = machine.state(), machine.counters()
    m = prepare(pair, name, params, prompts, protocol, bar, label)
    _reset_memory(pair.target.device)
    warm_up(m, pair, prompts, protocol, bar, label)
    bar.set_description(f"timed {label or name}")
    for p, prompt in enumerate(prompts):
        for r in range(protocol.repeats):
            measure(m, pair, p, r, prompt, protocol, None if reference is None else reference[p])
            bar.update()
    return record(m, _memory(pair.target.device), _watched(before, start))


def run_bar(methods: dict[str, tuple[str, dict]], prompts: list[Prompt], protocol: Protocol) -> tqdm:
    """One progress bar over every generation of the run (budget calibration, warm-up, timed), with its ETA."""
    calibrations = sum(min(CALIBRATION_PROMPTS, len(prompts)) for _, params in methods.values()
                       if params.get("budget") == "auto")
    per_method = protocol.warmup + len(prompts) * protocol.repeats
    return tqdm(total=calibrations + per_method * len(methods), desc="run", unit="gen", leave=False)


def _watched(before: dict, start: machine.Counters) -> dict:
    """The machine before and after a measurement, and other processes' CPU over all of it (warm-up included)."""
    return {"before": before, "after": machine.state(), **machine.load(start, machine.counters())}


def prepare(pair: ModelPair, name: str, params: dict, prompts: list[Prompt], protocol: Protocol,
            bar: tqdm | None = None, label: str | None = None) -> Measurement:
    """Build the method's decoder (calibrating its tree budget first when `budget: auto`)."""
    params, calibration = dict(params), None
    folder = params.pop("draft", None)  # a method entry's own draft (`draft: <folder>`), else the pair's
    if protocol.batch_size > 1:
        decoder = build_batched(name, pair.target, pair.draft_for(name, folder), **params)
        decoder.profile = protocol.profile
        return Measurement(name, decoder, draft=folder)
    if params.pop("budget", "fixed") == "auto":
        if bar is not None:
            bar.set_description(f"budget calibration {label or name}")
        calibration = calibrate_budget(pair, name, params, prompts, protocol, bar, folder)
        params |= {"depth": calibration["choice"]["depth"], "max_nodes": calibration["choice"]["max_nodes"]}
    decoder = build_decoder(name, pair.target, pair.draft_for(name, folder), **params)
    decoder.profile = protocol.profile
    decoder.sampling = protocol.sampling
    decoder.trace_rounds = protocol.trace_rounds
    static.configure(decoder, protocol.static_cache, protocol.compile)
    return Measurement(name, decoder, calibration, draft=folder)


WARMUP_SEEDS = 1 << 40  # warm-up conversations' seeds: apart from every timed one's


def warm_up(m: Measurement, pair: ModelPair, prompts: list[Prompt], protocol: Protocol, bar: tqdm | None = None,
            label: str | None = None) -> None:
    """Untimed generations (whole conversations) that bring caches, allocators and kernels to steady state."""
    if bar is not None:
        bar.set_description(f"warm-up {label or m.name}")
    for i in range(protocol.warmup):
        converse(m.decoder, pair, prompts[i % len(prompts)], protocol, seed=WARMUP_SEEDS + i)
        if bar is not None:
            bar.update()
    if hasattr(m.decoder, "reset_state"):  # state learnt from the warm-up prompts must not speed up timed ones
        m.decoder.reset_state()  # (the peers' decoders have none)


def stops_of(pair: ModelPair, protocol: Protocol):
    """The tokens that end a generation: the protocol's, else the tokenizer's EOS."""
    return pair.eos_token_id if protocol.stop_token_ids is None else protocol.stop_token_ids


def converse(decoder: Decoder, pair: ModelPair, prompt: Prompt | PromptBatch, protocol: Protocol,
             seed: int = 0) -> tuple[Generation | BatchGeneration, list[int] | None]:
    """Every turn of the prompt, each asked after the method's own earlier answers (Spec-Bench's multi-turn flow):
    the turns' tokens and statistics joined, and each turn's length. Building a later turn's input is not timed.
    Sampling, turn t draws from a generator seeded `seed` + t. A batch of single-turn prompts: one batched call."""
    stops = stops_of(pair, protocol)
    if isinstance(prompt, PromptBatch):
        return decoder.generate_batch([p.ids for p in prompt.prompts], protocol.max_new_tokens, stops), None
    answers, outs = [], []
    for turn in range(max(len(prompt.turns), 1)):
        ids = prompt.ids if turn == 0 else turn_ids(prompt, pair.tokenizer, protocol.chat, answers)
        outs.append(decoder.generate(ids, protocol.max_new_tokens, stops, seed=seed + turn))
        answers.append(outs[-1].tokens)
    if len(outs) == 1:
        return outs[0], [len(answers[0])]
    return Generation(sum(answers, []), GenerationStats.joined([o.stats for o in outs])), [len(a) for a in answers]


def measure(m: Measurement, pair: ModelPair, prompt_index: int, repeat: int, prompt: Prompt, protocol: Protocol,
            reference: Reference | None) -> dict:
    """One timed generation, appended to the method's samples with other processes' CPU during it.

    With `strict_quiet`, a MachineBusyError when the method's timed regions so far show a busy machine.
    """
    torch.manual_seed(protocol.seed + repeat)
    start, seed = machine.counters(), generation_seed(protocol.seed, prompt_index, repeat)
    out, turns = converse(m.decoder, pair, prompt, protocol, seed)
    load = machine.load(start, machine.counters())
    sample = _batch_sample(prompt, out, reference) if isinstance(prompt, PromptBatch) else _sample(out, reference)
    m.samples.append({"prompt": prompt_index, "repeat": repeat} | sample | {"category": prompt.category,
                                                                           "turns": turns, "seed": seed} | load)
    if protocol.strict_quiet:
        _stop_if_busy(m, prompt_index, protocol.busy_threshold)
    return m.samples[-1]


def generation_seed(seed: int, prompt_index: int, repeat: int) -> int:
    """The seed of one timed conversation: the same for every method (the tree methods then emit AR's very tokens
    under sampling too), distinct per prompt, repeat and turn (turns add 0, 1, ...)."""
    return seed + 1_000_003 * prompt_index + 1_009 * repeat


def _stop_if_busy(m: Measurement, prompt_index: int, threshold: float) -> None:
    timed = machine.timed_load(m.samples, threshold)
    if timed["busy"]:
        raise machine.MachineBusyError(
            f"the machine became busy: other processes used at least {timed['max_cores']:.2f} cores while {m.name} "
            f"was timed (prompt {prompt_index}; busy_threshold={threshold:g}); strict_quiet=true stops here: re-run "
            "on a quieter machine, or with strict_quiet=false to measure anyway (busy methods are flagged)")


def record(m: Measurement, memory: dict, watched: dict | None = None) -> dict:
    """The run record of a measured method: knobs used, raw samples, memory, machine load, calibration check."""
    run = {"method": m.name, "params": m.decoder.params(), "sampling": m.decoder.sampling.params(),
           "samples": m.samples, "memory": memory, "static_cache": static.label(m.decoder)}
    if m.draft is not None:
        run["draft"] = m.draft
    if watched is not None:
        run["machine"] = watched
    if m.calibration:
        measured = sum(s["new_tokens"] - 1 for s in m.samples) / sum(s["seconds"] - s["ttft_s"] for s in m.samples)
        m.calibration["measured_decode_tokens_per_s"] = measured
        predicted = m.calibration["choice"]["tokens_per_s_with_fallback" if m.decoder.fallback else "tokens_per_s"]
        m.calibration["prediction_error"] = predicted / measured - 1
        run["calibration"] = m.calibration
    return run


CALIBRATION_PROMPTS = 3
CALIBRATION_DEPTHS = range(1, 13)
CALIBRATION_CAPS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128)


def calibrate_budget(pair: ModelPair, name: str, params: dict, prompts: list[Prompt], protocol: Protocol,
                     bar: tqdm | None = None, folder: str | None = None) -> dict:
    """Profile a large tree on the first prompts, fit the cost model, and pick (depth, max_nodes) from it.

    The user's depth and max_nodes are the largest budget considered.
    """
    probe = build_decoder(name, pair.target, pair.draft_for(name, folder), **params)
    probe.profile, probe.trace_rounds = True, 10**9
    probe.fallback = False  # every profiled round a traced tree: the cost model pairs traces with round times
    probe.sampling = protocol.sampling  # acceptance as the measured run will see it
    samples = []
    for prompt in prompts[:CALIBRATION_PROMPTS]:
        samples.append(converse(probe, pair, prompt, protocol)[0].stats.to_dict())
        if bar is not None:
            bar.update()
    model = costmodel.fit(samples)
    traces = [t for s in samples for t in s["trace"]]
    depths = [d for d in CALIBRATION_DEPTHS if d <= params["depth"]]
    caps = [c for c in CALIBRATION_CAPS if c <= params["max_nodes"]] or [params["max_nodes"]]
    choice = costmodel.choose_budget(model, traces, depths, caps)
    by_prompt = [s["trace"] for s in samples]
    choice["tokens_per_s_with_fallback"] = costmodel.rate_with_fallback(model, by_prompt, choice["depth"],
                                                                        choice["max_nodes"])
    return {"cost_model": model.to_dict(), "choice": choice, "rounds": len(traces),
            "probe": {"depth": params["depth"], "max_nodes": params["max_nodes"]}}


def _sample(out: Generation, reference: Reference | None) -> dict:
    """One raw sample, compared with AR's tokens when the reference is known."""
    stats = out.stats.to_dict()
    return {"new_tokens": len(out.tokens), "seconds": stats.pop("total_s"), "ttft_s": stats.pop("ttft_s"),
            "tokens": out.tokens, **compare(out.tokens, reference), **stats}


def _batch_sample(batch: PromptBatch, out: BatchGeneration, references: list[Reference] | None) -> dict:
    """One batch's raw sample: total tokens over the batch's wall time, and per row its prompt, tokens, the seconds
    until it finished, and its comparison with batch-1 AR (when known)."""
    stats = out.stats.to_dict()
    rows = [{"prompt": p, "new_tokens": len(tokens), "seconds": seconds, "category": category}
            for p, tokens, seconds, category in zip(batch.indices, out.tokens, out.row_seconds, batch.categories,
                                                    strict=True)]
    sample = {"prompts": batch.indices, "batch_size": len(rows), "new_tokens": sum(r["new_tokens"] for r in rows),
              "seconds": stats.pop("total_s"), "ttft_s": stats.pop("ttft_s"), "tokens": out.tokens, "rows": rows}
    return sample | compared(sample, references) | stats


def compared(sample: dict, reference: Reference | list[Reference] | None) -> dict:
    """`compare` for a sample; a batch's rows each against their own reference, and the batch as a whole: mean
    exact match, the earliest divergence, and whether every diverged row left at a near-tie."""
    if "rows" not in sample:
        return compare(sample["tokens"], reference)
    references = reference or [None] * len(sample["rows"])
    rows = [row | compare(tokens, ref) for row, tokens, ref in zip(sample["rows"], sample["tokens"], references,
                                                                   strict=True)]
    if reference is None:
        return {"rows": rows, **compare([], None)}
    diverged = sorted((r for r in rows if r["first_divergence"] is not None), key=lambda r: r["first_divergence"])
    first = diverged[0] if diverged else {"first_divergence": None, "divergence_margin": None}
    return {"rows": rows, "exact_match": sum(r["exact_match"] for r in rows) / len(rows),
            "first_divergence": first["first_divergence"], "divergence_margin": first["divergence_margin"],
            "divergence_at_tie": all(r["divergence_at_tie"] for r in diverged) if diverged else None}


def _reference(sample: dict, prompt: Prompt | PromptBatch, pair: ModelPair,
               protocol: Protocol) -> Reference | list[Reference]:
    """AR's sample as the reference, with the target's top-2 logits at each of its tokens (kept in the sample);
    a later turn's logits are computed on that turn's input, built from AR's earlier answers as when it ran.
    A batch's reference is batch-1 greedy AR on each row's prompt, generated here (untimed; kept in the sample)."""
    if isinstance(prompt, PromptBatch):
        ar = AutoregressiveDecoder(pair.target)
        dtype = str(pair.target.dtype).removeprefix("torch.")
        tokens = [ar.generate(p.ids, protocol.max_new_tokens, stops_of(pair, protocol)).tokens for p in prompt.prompts]
        references = [Reference(t, top2_logits(pair.target, p.ids, t), dtype) for p, t in zip(prompt.prompts, tokens,
                                                                                              strict=True)]
        sample["batch_1_reference"] = [{"tokens": r.tokens, "top2_logits": r.top2} for r in references]
        return references
    answers = split_turns(sample["tokens"], sample.get("turns") or [len(sample["tokens"])])
    sample["top2_logits"] = []
    for turn, answer in enumerate(answers):
        ids = prompt.ids if turn == 0 else turn_ids(prompt, pair.tokenizer, protocol.chat, answers[:turn])
        sample["top2_logits"] += top2_logits(pair.target, ids, answer)
    return Reference(sample["tokens"], sample["top2_logits"], str(pair.target.dtype).removeprefix("torch."))


def split_turns(tokens: list[int], lengths: list[int]) -> list[list[int]]:
    """A conversation's tokens cut back into its turns' answers."""
    starts = [0, *itertools.accumulate(lengths)]
    return [tokens[a:b] for a, b in itertools.pairwise(starts)]


@torch.inference_mode()
def top2_logits(target, prompt_ids, tokens: list[int]) -> list[list[float]]:
    """The target's top-2 logits before each of `tokens`: one forward over prompt + tokens, outside every timed
    region (so AR's timing carries no extra work); a full forward rounds like AR's steps up to kernel order."""
    ids = torch.as_tensor([*list(prompt_ids), *tokens[:-1]], dtype=torch.long, device=target.device)[None]
    logits = target(input_ids=ids, logits_to_keep=len(tokens)).logits[0]
    return logits.float().topk(2, dim=-1).values.tolist()


def compare(tokens: list[int], reference: Reference | None) -> dict:
    """Exactness against AR: match fraction, first divergence, AR's top-2 margin there, and whether it is a tie."""
    if reference is None:
        return {"exact_match": None, "first_divergence": None, "divergence_margin": None, "divergence_at_tie": None}
    index = first_divergence(tokens, reference.tokens)
    margin, at_tie = None, None
    if index is not None:
        at_tie = False
        if index < len(reference.top2):  # else the method ran past AR's end: no margin, never a tie
            top1, top2 = reference.top2[index]
            margin = top1 - top2
            at_tie = margin <= metrics.tie_epsilon(reference.dtype, top1)
    return {"exact_match": exact_match(tokens, reference.tokens), "first_divergence": index,
            "divergence_margin": margin, "divergence_at_tie": at_tie}


def first_divergence(tokens: list[int], reference: list[int]) -> int | None:
    """The first index where `tokens` leave `reference`; the shorter length if one is a prefix; None if equal."""
    index = next((i for i, (a, b) in enumerate(zip(tokens, reference, strict=False)) if a != b), None)
    if index is None and len(tokens) != len(reference):
        index = min(len(tokens), len(reference))
    return index


def exact_match(tokens: list[int], reference: list[int]) -> float:
    """Fraction of positions (over the longer output) where the tokens equal the reference's."""
    longest = max(len(tokens), len(reference), 1)
    return sum(a == b for a, b in zip(tokens, reference, strict=False)) / longest


def _reset_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _memory(device: torch.device) -> dict:
    """Peak CUDA memory since the method started; on CPU the process RSS now and its lifetime peak."""
    if device.type == "cuda":
        return {"kind": "cuda", "peak_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20,
                "peak_reserved_mb": torch.cuda.max_memory_reserved(device) / 2**20}
    return {"kind": "cpu_rss", "rss_mb": psutil.Process().memory_info().rss / 2**20,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10}
