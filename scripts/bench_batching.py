"""Issue 16's benchmark: batched AR's throughput against batch-1 AR, and the harness's share of a batched round.

One process, the default pair (or --model): batch-1 AR (the ordinary decoder, one prompt at a time) and batched AR at
each --batches size decode the same --prompts prompts, in an order rotated every repeat (machine drift falls on all
alike), after one untimed warm-up pass each. Then, at --overhead-batch, AR, Linear (K=2) and a draft-only tree run
once with every forward timed: the harness overhead is the round time outside the model forwards. Prints one table
and writes the raw timings to --out (JSON).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from spec_decode import results
from spec_decode.bench import Protocol, in_batches, rotated, stops_of
from spec_decode.config import CONF_DIR
from spec_decode.data import Prompt
from spec_decode.decoders import build_decoder
from spec_decode.decoders.batched import build_batched
from spec_decode.models import load_pair
from spec_decode.runner import load_run_prompts

SPECULATIVE = {"linear_k2": ("linear", {"k": 2}), "tree_d4": ("tree", {"depth": 4, "branch": 2, "threshold": 0.1,
                                                                      "max_nodes": 8})}


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batches", default="1,2,4,8,16")
    parser.add_argument("--overhead-batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("results/batch_scaling/bench_batching.json"))
    args = parser.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    if min(args.batches + [args.prompts, args.tokens, args.repeats, args.overhead_batch]) < 1 or \
            max(args.batches + [args.overhead_batch]) > args.prompts:
        parser.exit(2, "bench_batching.py: error: sizes must be >= 1 and batches <= --prompts\n")
    return args


def decode_all(decoder, prompts: list[Prompt], batch: int | None, tokens: int, stops) -> tuple[float, int, list]:
    """Seconds and new tokens to decode every prompt (one at a time when `batch` is None; else in the benchmark's
    batches, of similar lengths), and the batches' stats."""
    start, new, stats = time.perf_counter(), 0, []
    if batch is None:
        for prompt in prompts:
            new += len(decoder.generate(prompt.ids, tokens, stops).tokens)
        return time.perf_counter() - start, new, stats
    for unit in in_batches(prompts, batch):
        out = decoder.generate_batch([p.ids for p in unit.prompts], tokens, stops)
        new += sum(len(t) for t in out.tokens)
        stats.append(out.stats)
    return time.perf_counter() - start, new, stats


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    torch.set_num_threads(args.threads)
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        cfg = compose("config", overrides=[f"model={args.model}", f"num_prompts={args.prompts}"])
    prompts, prompting = load_run_prompts(cfg)
    pair = load_pair(cfg.model)
    stops = stops_of(pair, Protocol(stop_token_ids=tuple(prompting["stop_token_ids"])))
    configs = [("ar batch-1 decoder", build_decoder("ar", pair.target), None)]
    configs += [(f"batched ar x{b}", build_batched("ar", pair.target), b) for b in args.batches]
    for _, decoder, batch in configs:  # warm-up: one pass over the first prompts
        decode_all(decoder, prompts[: batch or 1], batch, args.tokens, stops)
    timings = {name: [] for name, _, _ in configs}
    for r in range(args.repeats):
        for name, decoder, batch in rotated(configs, r):
            seconds, new, _ = decode_all(decoder, prompts, batch, args.tokens, stops)
            timings[name].append({"seconds": seconds, "new_tokens": new})
    rate = {name: sum(t["new_tokens"] for t in runs) / sum(t["seconds"] for t in runs)
            for name, runs in timings.items()}
    base = rate["ar batch-1 decoder"]
    print(f"{args.model} ({pair.info['dtype']}, {torch.get_num_threads()} threads), {len(prompts)} prompts x "
          f"{args.tokens} tokens, {args.repeats} interleaved repeats")
    print(f"{'decoder':<22} {'tok/s':>8} {'x batch-1 AR':>13}")
    for name in timings:
        print(f"{name:<22} {rate[name]:8.2f} {rate[name] / base:13.2f}")
    overhead = measure_overhead(pair, prompts, args, stops)
    print(f"harness overhead at batch {args.overhead_batch} (round time outside model forwards):")
    for name, share in overhead.items():
        print(f"  {name:<10} {100 * share['overhead']:5.1f}% of {share['round_s']:.3f} s per round")
    payload = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "environment": results.environment(pair.target.device, pair.info["dtype"], {}), "model": pair.info,
               "timings": timings, "tokens_per_s": rate, "overhead_at_batch": overhead,
               "speedup_vs_batch_1_ar": {name: r / base for name, r in rate.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results.write_atomic(args.out, payload)
    print(f"written to {args.out}")
    return 0


def measure_overhead(pair, prompts: list[Prompt], args: argparse.Namespace, stops) -> dict:
    """Per method at the overhead batch: the share of round time spent outside the target and draft forwards."""
    methods = {"ar": ("ar", {})} | SPECULATIVE
    out = {}
    for label, (name, params) in methods.items():
        decoder = build_batched(name, pair.target, pair.draft, **params)
        decoder.profile = True
        decode_all(decoder, prompts[: args.overhead_batch], args.overhead_batch, args.tokens, stops)  # warm-up
        _, _, stats = decode_all(decoder, prompts, args.overhead_batch, args.tokens, stops)
        rounds = sum(sum(s.round_times_s) for s in stats)
        forwards = sum(sum(s.target_forward_s_per_round) + sum(s.draft_forward_s_per_round) for s in stats)
        count = sum(s.rounds for s in stats)
        out[label] = {"overhead": 1 - forwards / rounds, "round_s": rounds / count, "rounds": count}
    return out


if __name__ == "__main__":
    sys.exit(main())
