"""Median time of one cached target (and draft) forward over n new tokens, n = 1..N: the verify-cost curve.

Usage: python scripts/forward_cost.py [--model smollm2] [--context 200] [--max-tokens 32] [--threads 2]
                                      [--repeats 15] [--out DIR] [--set model.dtype=float16 ...]
With --out, the curve is also written to DIR/forward_cost_<model>.csv and .json (with the model's info).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_dir

from spec_decode.decoders.base import Clock, forward
from spec_decode.kv import new_cache, rollback
from spec_decode.models import load_pair
from spec_decode.runner import CONF_DIR


def median_forward_s(model, context: int, n: int, clock: Clock, repeats: int = 15) -> float:
    """Median seconds of feeding n tokens after a `context`-token cache (the cache is rolled back each time)."""
    cache = new_cache()
    ids = torch.randint(0, model.config.vocab_size, (context + n,), device=model.device)
    forward(model, ids[:context], cache)
    times = []
    for _ in range(repeats):
        begin = clock.now()
        forward(model, ids[context:], cache)
        times.append(clock.now() - begin)
        rollback(cache, context)
    return statistics.median(times)


def curve(pair, context: int, max_tokens: int, repeats: int) -> pd.DataFrame:
    """Target and draft forward milliseconds for 1..max_tokens new tokens (one warm-up curve point first)."""
    clock = Clock(pair.target.device)
    for model in (pair.target, pair.draft):
        median_forward_s(model, context, max_tokens, clock, repeats=2)
    rows = [{"tokens": n, "target_ms": 1000 * median_forward_s(pair.target, context, n, clock, repeats),
             "draft_ms": 1000 * median_forward_s(pair.draft, context, n, clock, repeats)}
            for n in range(1, max_tokens + 1)]
    df = pd.DataFrame(rows)
    return df.assign(target_per_token_ms=df.target_ms / df.tokens, target_vs_one=df.target_ms / df.target_ms[0])


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="model config name (conf/model/<name>.yaml)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="Hydra overrides, e.g. model.dtype=x")
    parser.add_argument("--context", type=int, default=200, help="tokens already in the cache")
    parser.add_argument("--max-tokens", type=int, default=32, help="largest number of new tokens per forward")
    parser.add_argument("--repeats", type=int, default=15, help="timed forwards per point (the median is kept)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--out", type=Path, help="folder for forward_cost_<model>.csv / .json")
    return parser.parse_args(argv)


@torch.inference_mode()
def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        cfg = compose("config", overrides=[f"model={args.model}", *args.set])
    pair = load_pair(cfg.model)
    df = curve(pair, args.context, args.max_tokens, args.repeats)
    info = pair.info | {"context": args.context, "repeats": args.repeats, "threads": args.threads,
                        "device_name": torch.cuda.get_device_name(pair.target.device)
                        if pair.target.device.type == "cuda" else "cpu"}
    print(f"{info['name']}, {info['dtype']}, {info['device_name']}, {args.context}-token context")
    print(df.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.out / f"forward_cost_{args.model}.csv", index=False)
        (args.out / f"forward_cost_{args.model}.json").write_text(
            json.dumps({"info": info, "curve": df.to_dict(orient="records")}, indent=1))
    return df


if __name__ == "__main__":
    main()
