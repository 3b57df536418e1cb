"""What per-token acceptance a draft needs for a speedup, under a run's own measured costs.

Usage: python scripts/speedup_bound.py [RESULT.json] [--verify retrieval_adaptive] [--draft-method linear_k2]
                                      [--speedups 1.3 1.5 2.0]

From the run: an AR step (AR's mean round), a verified node's cost (the slope of the fit of `--verify`'s round
times, as retrieval_ceiling.py fits them) and a draft forward's (`--draft-method`'s profiled draft seconds per draft
forward). Then Leviathan et al.'s model of a round that drafts a chain of k tokens, each accepted with probability
alpha independently: the best k and its expected speedup for several alphas (the draft's measured acceptance and its
top-1 agreement on Spec-Bench answers, from models/smollm2-draft/eval_results.json, among them) and the least alpha
that reaches each speedup, with the draft and draft-free (a source that costs nothing to ask). A model, not a
measurement: it prices acceptance, and says how much of it a goal asks for on this hardware.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from spec_decode.costmodel import acceptance_needed, best_chain, verify_fit
from spec_decode.results import read_for_script

RESULT = Path("results/spec_bench/smollm2-135m_distilled/result.json")
MISSING = "; run `make spec-bench` first"
EVAL = Path("models/smollm2-draft/eval_results.json")
ALPHAS = (0.5, 0.6, 0.7, 0.8, 0.9)


def draft_forward_s(samples: list[dict]) -> float:
    """Mean profiled seconds of one draft forward over a method's samples."""
    seconds = sum(sum(s["draft_forward_s_per_round"]) for s in samples)
    return seconds / sum(s["draft_forwards"] for s in samples)


def mean_round_s(samples: list[dict]) -> float:
    """Mean seconds of a method's rounds."""
    return sum(sum(s["round_times_s"]) for s in samples) / sum(len(s["round_times_s"]) for s in samples)


def measured_acceptance(samples: list[dict]) -> float:
    """Accepted over drafted tokens, over the rounds that drafted."""
    return sum(s["accepted"] for s in samples) / max(sum(s["drafted"] for s in samples), 1)


def spec_bench_agreement(path: Path = EVAL) -> float | None:
    """The committed draft's teacher-forced top-1 agreement over the target's Spec-Bench answers, if evaluated."""
    if not path.exists():
        return None
    return json.loads(path.read_text()).get("spec_bench", {}).get("overall", {}).get("top1")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", nargs="?", type=Path, default=RESULT)
    parser.add_argument("--verify", default="retrieval_adaptive", help="the method whose rounds fit the verify cost")
    parser.add_argument("--draft-method", default="linear_k2", help="the method whose profile prices a draft forward")
    parser.add_argument("--speedups", type=float, nargs="+", default=[1.3, 1.5, 2.0])
    args = parser.parse_args(argv)
    methods = read_for_script(args.result, ("ar", args.verify, args.draft_method), MISSING)["methods"]
    ar_step = mean_round_s(methods["ar"]["samples"])
    base, per_node = verify_fit(methods[args.verify]["samples"])
    drafting = methods[args.draft_method]["samples"]
    node, draft = per_node / ar_step, draft_forward_s(drafting) / ar_step
    print(f"{args.result}: an AR step {1000 * ar_step:.1f} ms (AR's mean round); a verified node "
          f"{1000 * per_node:.2f} ms = {node:.3f} AR steps (fit on {args.verify}'s rounds: {1000 * base:.1f} ms + "
          f"{1000 * per_node:.2f} ms a node); a draft forward {1000 * ar_step * draft:.2f} ms = {draft:.3f} AR steps "
          f"({args.draft_method}'s profile)")
    alphas = [("measured", measured_acceptance(drafting)), ("agreement", spec_bench_agreement())]
    print(f"  {args.draft_method} accepted {alphas[0][1]:.3f} of its drafted tokens; the draft's top-1 agreement on "
          f"the Spec-Bench answers: {alphas[1][1] if alphas[1][1] is None else format(alphas[1][1], '.3f')}")
    print("  per-token acceptance -> the best chain k and its expected speedup (with the draft | draft-free)")
    for name, alpha in [*[a for a in alphas if a[1] is not None], *[(None, a) for a in ALPHAS]]:
        (k, with_draft), (k_free, free) = best_chain(alpha, node, draft), best_chain(alpha, node, 0.0)
        label = f" ({name})" if name else ""
        print(f"    {alpha:.3f}{label:12s} k={k:2d} {with_draft:.3f}x | k={k_free:2d} {free:.3f}x")
    for speedup in args.speedups:
        need = [acceptance_needed(speedup, node, d) for d in (draft, 0.0)]
        shown = ["out of reach" if a is None else f"{a:.3f}" for a in need]
        print(f"  {speedup:.2f}x AR needs a per-token acceptance of {shown[0]} with the draft, {shown[1]} draft-free")
    print(f"  a perfect draft (every token accepted, k <= 32): {best_chain(1.0, node, draft)[1]:.2f}x; the limit as k "
          f"grows: {1 / (node + draft):.2f}x")


if __name__ == "__main__":
    main()
