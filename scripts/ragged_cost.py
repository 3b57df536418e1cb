"""Issue 16's scheme question: what realigning rows would cost against the per-row cache the batched decoders use.

Cropping every row to the shortest acceptance re-feeds up to K tokens per row next round: the target's verification
block widens from K+1 to K+1+r (r <= K). This times one target forward of a batch at a 100-token context for widths
K+1 .. 2K+1 on the same `RowCache` (so the only difference is the extra tokens), after a warm-up; the per-row scheme
pays width K+1 plus its scatter writes and masks (inside the `overhead` that bench_batching.py measures).
"""

from __future__ import annotations

import argparse
import time

import torch
from hydra import compose, initialize_config_dir

from spec_decode.config import CONF_DIR
from spec_decode.decoders.batched import RowCache, causal
from spec_decode.models import load_pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        cfg = compose("config", overrides=[f"model={args.model}"])
    target = load_pair(cfg.model).target
    rows, context = args.batch, 100
    cache = RowCache(target, [0] * rows, context + 2 * args.k + 4)
    with torch.inference_mode():
        ids = torch.randint(0, 1000, (rows, context))
        cache.feed(ids, torch.arange(context).expand(rows, -1), causal(rows, context, "cpu"), last_only=True)
        cache.hold([context] * rows)
        times = {}
        for width in range(args.k + 1, 2 * args.k + 2):
            block = torch.randint(0, 1000, (rows, width))
            positions = context + torch.arange(width).expand(rows, -1)
            cache.feed(block, positions, causal(rows, width, "cpu"))  # warm-up
            start = time.perf_counter()
            for _ in range(args.repeats):
                cache.feed(block, positions, causal(rows, width, "cpu"))
            times[width] = (time.perf_counter() - start) / args.repeats
    base = times[args.k + 1]
    print(f"{args.model}, batch {rows}, K={args.k}, {args.threads} threads: target forward by block width")
    for width, seconds in times.items():
        print(f"  width {width} (re-fed {width - args.k - 1}): {1000 * seconds:7.1f} ms  {seconds / base:5.2f}x")


if __name__ == "__main__":
    main()
