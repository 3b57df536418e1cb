"""Median time of one cached target (and draft) forward over n new tokens, n = 1..32: the verify-cost curve.

Usage: python scripts/forward_cost.py [model=smollm2] [context=200] [threads=2]
"""

from __future__ import annotations

import statistics
import sys

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


@torch.inference_mode()
def main(model: str = "smollm2", context: str = "200", threads: str = "2") -> None:
    torch.set_num_threads(int(threads))
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        cfg = compose("config", overrides=[f"model={model}"])
    pair = load_pair(cfg.model)
    clock = Clock(pair.target.device)
    print(f"{pair.info['name']} target, {pair.info['dtype']}, {pair.target.device}, {threads} threads, "
          f"{context}-token context")
    for n in (1, 2, 3, 5, 8, 12, 16, 24, 32):
        target_ms = 1000 * median_forward_s(pair.target, int(context), n, clock)
        draft_ms = 1000 * median_forward_s(pair.draft, int(context), n, clock)
        print(f"  {n:3d} tokens: target {target_ms:7.1f} ms   draft {draft_ms:6.1f} ms")


if __name__ == "__main__":
    main(**dict(arg.split("=", 1) for arg in sys.argv[1:]))
