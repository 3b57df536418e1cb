"""Compare a quiet run with a busy one of the same configuration (scripts/busy_check.sh): both summary tables, then
per method both speedups and their ratio, and whether the busy run was flagged.

    python scripts/busy_compare.py results/busy_check/quiet results/busy_check/busy

Exit status 0 when every speedup of the busy run is within TOLERANCE of the quiet run's and the busy run was
flagged; 1 otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from spec_decode.results import RESULT_FILE, read
from spec_decode.runner import busy_warnings, summary_table

TOLERANCE = 0.15


def side_by_side(quiet: dict, busy: dict) -> pd.DataFrame:
    """Per method: tok/s, speedup and others (cores) of both runs, the speedup ratio busy/quiet (also of the
    per-prompt speedups, sp.ratios), the busy marks."""
    rows = []
    for q, b in zip(quiet["summary"], busy["summary"], strict=True):
        rows.append({"method": q["method"], "quiet tok/s": q["throughput"]["mean"],
                     "busy tok/s": b["throughput"]["mean"], "quiet speedup": q["speedup"], "busy speedup": b["speedup"],
                     "busy/quiet": b["speedup"] / q["speedup"],
                     "sp.ratios busy/quiet": b["speedup_mean_of_ratios"] / q["speedup_mean_of_ratios"],
                     "quiet others": _others(q), "busy others": _others(b),
                     "quiet mark": _mark(q), "busy mark": _mark(b)})
    return pd.DataFrame(rows).set_index("method")


def _others(summary: dict) -> float:
    return (summary.get("other_cpu") or {}).get("mean_cores", float("nan"))


def _mark(summary: dict) -> str:
    return "BUSY" if (summary.get("other_cpu") or {}).get("busy") else ""


def main(quiet_dir: str, busy_dir: str) -> int:
    quiet, busy = read(Path(quiet_dir) / RESULT_FILE), read(Path(busy_dir) / RESULT_FILE)
    if quiet is None or busy is None:
        print(f"error: no result in {quiet_dir if quiet is None else busy_dir}", file=sys.stderr)
        return 2
    for name, payload in (("quiet", quiet), ("busy", busy)):
        print(f"== {name} run ({payload['started_at']})")
        print("\n".join([summary_table(payload), *busy_warnings(payload)]))
    table = side_by_side(quiet, busy)
    env = quiet["environment"]
    print(f"== side by side: pair {quiet['model']['name']}, {env['device_name']}, {env['dtype']}, "
          f"{env['torch_threads']} threads, interleave={quiet['config'].get('interleave')}")
    print(table.to_string(float_format=lambda x: f"{x:.3f}"))
    spread = (table["busy/quiet"].drop(index=table.index[0]) - 1).abs().max()
    within = bool(spread <= TOLERANCE)
    flagged = table["busy mark"].eq("BUSY").any()
    print(f"speedups within {TOLERANCE:.0%} of the quiet run's: {'yes' if within else 'NO'} "
          f"(largest difference {spread:.1%})")
    print(f"busy run flagged: {'yes' if flagged else 'NO'} "
          f"({', '.join(table.index[table['busy mark'] == 'BUSY']) or 'no method marked'}); "
          f"quiet run flagged: {'yes' if table['quiet mark'].eq('BUSY').any() else 'no'}")
    return 0 if within and flagged else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
