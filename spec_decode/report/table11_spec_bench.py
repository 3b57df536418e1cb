"""Table 11: Spec-Bench leaderboard, speedup over AR per task category, mean accepted tokens, overall speedup, and
(profiled runs) the share of round time outside model forwards."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from spec_decode.report.common import MissingData, Table, command, experiment_rows
from spec_decode.report.reported import load_reported

ARTIFACT = "Table 11 (Spec-Bench leaderboard)"
EXPERIMENT = "spec_bench"
REPORTED = Path(__file__).resolve().parents[2] / "experiments" / "spec_bench_reported.yaml"
# Spec-Bench's task names (result keys under `by_category`) and its leaderboard's column titles, in its order.
CATEGORIES = {"mt_bench": "Multi-turn Conversation", "translation": "Translation", "summarization": "Summarization",
              "qa": "Question Answering", "math_reasoning": "Mathematical Reasoning",
              "rag": "Retrieval-aug. Generation"}
ACCEPTED, OVERALL, OVERHEAD = "#Mean Accepted Tokens", "Overall", "Overhead share"


def categories(rows: pd.DataFrame) -> list[str]:
    """The categories a run measured, in the leaderboard's order; MissingData when it has no per-category results."""
    present = [c for c in CATEGORIES if f"by_category.{c}.speedup" in rows
               and rows[f"by_category.{c}.speedup"].notna().any()]
    if not present:
        raise MissingData(f"no per-category results (by_category) in experiment {EXPERIMENT!r}; "
                          f"run: {command(EXPERIMENT)}")
    return present


def tables(df: pd.DataFrame) -> dict[str, Table]:
    """One row per method of the newest run, then Spec-Bench's published rows (not ranked) under them."""
    rows = experiment_rows(df, EXPERIMENT)
    present = categories(rows)
    ours = pd.DataFrame({"Method": rows["method"],
                         **{CATEGORIES[c]: rows[f"by_category.{c}.speedup"] for c in present},
                         ACCEPTED: rows["tokens_per_round"], OVERALL: rows["speedup"]})
    if "time_share.overhead" in rows:  # profiled runs: the share of round time outside model forwards
        ours[OVERHEAD] = rows["time_share.overhead"]
    frame = pd.concat([ours, reported_rows(present)], ignore_index=True)
    numeric = [c for c in frame.columns[1:] if c != OVERHEAD]
    return {"table11_spec_bench": Table(frame, best=dict.fromkeys(numeric, "max"),
                                        digits=dict.fromkeys(frame.columns[1:], 2),
                                        unranked=list(range(len(ours), len(frame))))}


def reported_rows(present: list[str], path: Path = REPORTED) -> pd.DataFrame:
    """Spec-Bench's published rows, each labelled with its model and hardware; unknown cells NaN."""
    published = load_reported(path)
    label = f"reported: {published['models']}, {published['hardware']}"
    lines = []
    for row in published["rows"]:
        known = row.get("by_category") or {}
        if unknown := sorted(set(known) - set(CATEGORIES)):
            raise ValueError(f"{path}: row {row['name']!r}: unknown by_category {unknown}; "
                             f"use Spec-Bench's task names {list(CATEGORIES)}")
        lines.append({"Method": f"{row['name']} [{label}]",
                      **{CATEGORIES[c]: float(known.get(c, math.nan)) for c in present},
                      ACCEPTED: float(row.get("mean_accepted_tokens", math.nan)), OVERALL: float(row["overall"])})
    return pd.DataFrame(lines)
