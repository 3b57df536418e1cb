"""Is a speedup more than noise? Each method's per-prompt throughput over the baseline's, with a bootstrap interval.

Usage: python scripts/paired_ratios.py RESULT.json [--baseline ar]

Per reporting group (Spec-Bench's; all prompts when the samples have no category) and overall: the mean over
(prompt, repeat) pairs of a method's tokens/s over the baseline's on the same pair, its 95% percentile-bootstrap
interval (from 5 pairs up) and on how many pairs the method was faster. An interval that holds 1 says the run
cannot tell the method from the baseline.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from spec_decode.metrics import bootstrap_interval, group_of, paired_ratios
from spec_decode.results import read_for_script

MIN_PAIRS = 5  # a bootstrap over fewer pairs resamples too few values to mean anything: no interval then


def groups(samples: list[dict]) -> dict[str, list[dict]]:
    """A method's samples by reporting group, then all of them as `overall`."""
    by_group: dict[str, list[dict]] = {}
    for sample in samples:
        if sample.get("category") is not None:
            by_group.setdefault(group_of(sample["category"]), []).append(sample)
    return {**by_group, "overall": samples}


def rows(result: dict, baseline: str) -> list[str]:
    """One line per method and group: mean per-prompt ratio, interval, wins."""
    base, lines = result["methods"][baseline]["samples"], []
    for label, run in result["methods"].items():
        if label == baseline:
            continue
        for group, samples in groups(run["samples"]).items():
            paired = paired_ratios(samples, base)
            if paired.size:
                interval = "(too few)"
                if paired.size >= MIN_PAIRS:
                    interval = "[{:.3f}, {:.3f}]".format(*bootstrap_interval(paired))
                lines.append(f"  {label:24s} {group:14s} {paired.mean():.3f}  {interval:16s}  "
                             f"faster on {(paired > 1).sum()} of {paired.size}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path)
    parser.add_argument("--baseline", default="ar", help="the method label the others are divided by")
    args = parser.parse_args(argv)
    result = read_for_script(args.result, (args.baseline,))
    print(f"{args.result}: per-prompt tokens/s over {args.baseline}'s; mean [95% bootstrap interval]")
    print("\n".join(rows(result, args.baseline)))


if __name__ == "__main__":
    main()
