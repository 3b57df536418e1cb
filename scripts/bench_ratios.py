"""Print the performance goals' ratios from bench result files (results/bench by default)."""

from __future__ import annotations

import sys

import pandas as pd

from spec_decode.metrics import bootstrap_interval, paired_ratios
from spec_decode.report.common import raw
from spec_decode.results import load_results

PEERS = ("hf_assisted", "hf_lookup")
OTHER_DRAFT = "_stage3"  # make bench-drafts: a method's label with this suffix ran the previous draft


def best(speed: pd.Series, mask) -> tuple[str, float] | None:
    """The label and speedup of the fastest method among `mask` (None when there is none)."""
    chosen = speed[mask]
    return (chosen.idxmax(), chosen.max()) if len(chosen) else None


def ratio(b: dict, num: str, den: str, goal: str) -> None:
    """Print best[num] / best[den] when both groups ran."""
    if b[num] and b[den]:
        print(f"  {b[num][0]} / {b[den][0]} = {b[num][1] / b[den][1]:.3f}  ({goal})")


def draft_ratios(speed: pd.Series, file: str) -> None:
    """Print each method's speedup with the committed draft over its own with the previous draft, per prompt too."""
    methods = raw(file)["methods"]
    for label in speed.index:
        if f"{label}{OTHER_DRAFT}" in speed:
            paired = paired_ratios(methods[label]["samples"], methods[label + OTHER_DRAFT]["samples"])
            low, high = bootstrap_interval(paired)
            print(f"  {label} / {label}{OTHER_DRAFT} = {speed[label] / speed[label + OTHER_DRAFT]:.3f}"
                  "  (new draft over the previous one: >= 1 does not regress)\n"
                  f"    per prompt: mean {paired.mean():.3f}, 95% bootstrap interval [{low:.3f}, {high:.3f}], "
                  f"faster on {(paired > 1).sum()} of {paired.size}")


def worst_error(errors: pd.Series) -> float:
    """The prediction error (predicted / measured decode tokens/s - 1) farthest from 0, with its sign."""
    errors = errors.dropna()
    return errors.loc[errors.abs().idxmax()] if len(errors) else float("nan")


def main(path: str = "results/bench") -> None:
    df = load_results(path)
    if df.empty:
        sys.exit(f"no complete result under {path}; run `make bench` first")
    for file, run in df.groupby("file"):
        run = run.set_index("method")
        current = ~run.index.str.endswith(OTHER_DRAFT)  # goals: the committed draft's; the other one's in draft_ratios
        speed, name = run["speedup"][current], run["decoder"][current]
        lookup = run.get("param.lookup", pd.Series(0, index=run.index))[current].fillna(0)
        trees, hybrids = (name == "tree") & (lookup == 0), (name == "tree") & (lookup > 0)
        linears = name == "linear"
        peers, assisted = name.isin(PEERS), name == "hf_assisted"
        print(f"{file}\n  pair {run['model'].iloc[0]}, {run['device_name'].iloc[0]}, {run['dtype'].iloc[0]}, "
              f"{int(run['samples'].iloc[0])} samples x {run['max_new_tokens'].iloc[0]} new tokens, "
              f"interleaved={bool(run['interleave'].iloc[0])}")
        cols = ["speedup", "throughput.mean", "tokens_per_round", "exact_match.mean"]
        cols += [c for c in ("time_share.overhead", "budget_prediction_error") if c in run]
        print(run[cols].to_string(float_format=lambda x: f"{x:.3f}"))
        ours = ~peers & (name != "ar")
        b = {"tree": best(speed, trees), "hybrid": best(speed, hybrids), "linear": best(speed, linears),
             "assisted": best(speed, assisted), "peer": best(speed, peers), "ours": best(speed, ours)}
        for tree in ("tree", "hybrid"):
            ratio(b, tree, "assisted", "goal 1: >= 1.25")
            ratio(b, tree, "linear", "goal 1: >= 1.15")
        for k in (2, 4):
            if f"linear_k{k}" in speed and f"hf_assisted_k{k}" in speed:
                print(f"  linear_k{k} / hf_assisted_k{k} = {speed[f'linear_k{k}'] / speed[f'hf_assisted_k{k}']:.3f}"
                      "  (goal 2: >= 1.0)")
        ratio(b, "ours", "peer", "goal 3: >= 1.2")
        draft_ratios(run["speedup"], file)
        if "time_share.overhead" in run:
            print(f"  largest harness overhead share: {run['time_share.overhead'].max():.3f}  (goal 4: <= 0.10)")
        if "budget_prediction_error" in run:
            print(f"  cost-model prediction error: {worst_error(run['budget_prediction_error']):+.3f}"
                  "  (goal 5: within 0.15)")


if __name__ == "__main__":
    main(*sys.argv[1:])
