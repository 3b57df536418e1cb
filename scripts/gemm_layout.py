"""Time the default target's linear layers, and its whole forward, for a few row counts under two GEMM layouts.

`F.linear` computes x @ Wᵀ; on a CPU whose BLAS handles a few rows badly, W @ xᵀ (the weight as the left operand,
one row padded to two: `WeightLeftLinear`) reads the same weights in another kernel. Prints median milliseconds;
used for the README's hardware paragraph.
    python scripts/gemm_layout.py [--forward] [--threads 2] [--rows 1 2 3 4 8 17]
"""
import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from spec_decode.models import WeightLeftLinear  # noqa: E402

ROWS = (1, 2, 3, 4, 8, 17)
# SmolLM2-135M: hidden 576, 9 query / 3 KV heads of 64, MLP 1536, 30 layers (out, in)
LAYER_SHAPES = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]


def median_ms(fn, repeats: int = 30) -> float:
    """Median wall time of `fn()` in milliseconds, after 3 warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * sorted(times)[len(times) // 2]


def linears(rows_list) -> None:
    """The 30 layers' linears (random weights of the target's shapes) for each row count, both layouts."""
    layers = [nn.Linear(inp, out, bias=False) for _ in range(30) for out, inp in LAYER_SHAPES]
    for rows in rows_list:
        inputs = {576: torch.randn(rows, 576), 1536: torch.randn(rows, 1536)}
        x_wt = median_ms(lambda x=inputs: [F.linear(x[m.in_features], m.weight) for m in layers])
        w_xt = median_ms(lambda x=inputs: [WeightLeftLinear.forward(m, x[m.in_features]) for m in layers])
        print(f"rows {rows:2d}: linears x @ W^T (F.linear) {x_wt:6.1f} ms   W @ x^T {w_xt:6.1f} ms", flush=True)


def forwards(rows_list, context: int = 400) -> None:
    """The real target's forward of n tokens after a `context`-token prefill, with `F.linear` and with W @ xᵀ."""
    from transformers import DynamicCache

    from spec_decode.offline import load_gguf_target

    target, _ = load_gguf_target()
    ids = torch.randint(100, 20000, (1, context + max(rows_list)))
    cache = DynamicCache(config=target.config)
    target(ids[:, :context], cache=cache, use_cache=True)

    def forward_ms(n: int) -> float:
        def step():
            target(ids[:, context:context + n], cache=cache, use_cache=True)
            cache.crop(-n)
        return median_ms(step, repeats=12)

    plain = {n: forward_ms(n) for n in rows_list}
    original = nn.Linear.forward
    nn.Linear.forward = WeightLeftLinear.forward  # every nn.Linear, as model.weight_left_gemm does
    try:
        swapped = {n: forward_ms(n) for n in rows_list}
    finally:
        nn.Linear.forward = original
    for n in rows_list:
        print(f"n {n:2d}: target forward, F.linear {plain[n]:6.1f} ms   W @ x^T {swapped[n]:6.1f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--forward", action="store_true", help="also time the default target's whole forward")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, nargs="+", default=list(ROWS), help="row (token) counts to time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with torch.inference_mode():
        linears(args.rows)
        if args.forward:
            forwards(args.rows)


if __name__ == "__main__":
    main()
