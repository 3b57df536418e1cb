"""Print the performance goals' ratios from bench result files (results/bench by default)."""

from __future__ import annotations

import sys

from spec_decode.results import load_results

OURS, PEERS = ("linear", "tree"), ("hf_assisted", "hf_lookup")


def main(path: str = "results/bench") -> None:
    df = load_results(path)
    if df.empty:
        sys.exit(f"no complete result under {path}; run `make bench` first")
    for file, run in df.groupby("file"):
        speed = run.set_index("method")["speedup"]
        best = {k: speed[[m for m in speed.index if m.startswith(k)]].max() for k in (*OURS, *PEERS)}
        print(f"{file}\n  pair {run['model'].iloc[0]}, {run['device_name'].iloc[0]}, {run['dtype'].iloc[0]}, "
              f"{run['max_new_tokens'].iloc[0]} new tokens")
        print(speed.to_string(float_format=lambda x: f"{x:.3f}"))
        print(f"  tree / hf_assisted (best)   = {best['tree'] / best['hf_assisted']:.3f}  (goal >= 1.25)")
        print(f"  tree / linear (best)        = {best['tree'] / best['linear']:.3f}  (goal >= 1.15)")
        for k in (2, 4):
            if f"linear_k{k}" in speed and f"hf_assisted_k{k}" in speed:
                print(f"  linear_k{k} / hf_assisted_k{k}   = {speed[f'linear_k{k}'] / speed[f'hf_assisted_k{k}']:.3f}"
                      "  (goal >= 1.0)")
        print(f"  ours / best peer            = {max(best[k] for k in OURS) / max(best[k] for k in PEERS):.3f}"
              "  (goal >= 1.2)")
        shares = run.set_index("method").filter(like="time_share.overhead").squeeze()
        print("  overhead share of round time:", shares.round(3).to_dict() if hasattr(shares, "round") else shares)


if __name__ == "__main__":
    main(*sys.argv[1:])
