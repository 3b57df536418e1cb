"""Issue 15's proof that sampling is lossless: every method's first tokens G-tested against the target's exact law.

One line per method and sampling on the tiny float64 pair (spec_decode/lossless.py): name, knobs, draws, cells / df,
p-value, the power against a 2% shift (moved between the two likeliest sequences; the worst 2% total-variation shift)
and the shifts of each kind detected with power 0.8, PASS or FAIL (p < 0.001), seconds. Exit status 1 when any
fails, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from spec_decode.lossless import ALPHA, CASES, SAMPLINGS, check_case, tiny_pair64

DRAWS = 800  # 12 methods x 2 samplings in under 5 minutes on a 2-core CPU
SEED = 100_000
CASE_SEEDS = 1_000_000  # seeds apart between cases


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr (no usage block) and exit status 2."""

    def error(self, message: str):
        sys.stderr.write(f"check_lossless.py: error: {message}\n")
        sys.exit(2)


def positive(minimum: int):
    """An argparse type: an integer >= `minimum`."""
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise ValueError
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """--draws and --seed; a bad value is one line on stderr and exit status 2."""
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=positive(100), default=DRAWS, help=f"generations per method and sampling "
                        f"(>= 100; default {DRAWS})")
    parser.add_argument("--seed", type=positive(0), default=SEED, help=f"the first generation's seed, the others "
                        f"follow (default {SEED}: draws the test suite does not make)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    torch.set_num_threads(1)
    pair = tiny_pair64()
    failed = 0
    width = max(len(case.label()) for case in CASES.values())
    print(f"{'method':<{width}} {'sampling':<23} {'N':>5} {'cells/df':>8} {'p':>7}  {'power at 2%':>11}  "
          f"{'80% detects':>11}")
    print(f"{'':<{width}} {'':<23} {'':>5} {'':>8} {'':>7}  {'top2 worst':>11}  {'top2 worst':>11}")
    for index, case in enumerate(CASES.values()):
        for name, sampling in SAMPLINGS.items():
            start = time.perf_counter()  # own seeds per case: tree methods would otherwise repeat AR's draws
            r = check_case(case, pair, sampling, args.draws, args.seed + CASE_SEEDS * index)
            failed += not r.passed
            print(f"{case.label():<{width}} {name:<23} {r.draws:>5} {r.df + 1:>4}/{r.df:<3} {r.p_value:>7.4f}  "
                  f"{r.power_shift:>5.3f} {r.power_worst:>5.3f}  {r.detectable_shift:>5.1%} "
                  f"{r.detectable_worst:>5.1%}  "
                  f"{'PASS' if r.passed else 'FAIL'}  {time.perf_counter() - start:3.0f} s", flush=True)
    print(f"{failed} of {len(CASES) * len(SAMPLINGS)} checks failed (p < {ALPHA})" if failed else "all passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
