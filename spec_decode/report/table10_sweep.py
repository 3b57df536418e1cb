"""Table 10: sweep summaries, top-10 configurations, best per length, speedup per branch factor and threshold."""

from __future__ import annotations

import pandas as pd

from spec_decode.report.common import Table, experiment_rows, require

ARTIFACT = "Table 10 (sweep summaries)"
EXPERIMENT = "sweep"
KNOBS = {"param.depth": "D", "param.branch": "B", "param.threshold": "τ", "max_new_tokens": "new tokens"}
METRICS = {"speedup": "speedup (×)", "throughput.mean": "tok/s", "tokens_per_round": "tokens/round",
           "mean_tree_nodes": "avg nodes"}
DIGITS = {"τ": 2, "tok/s": 1, "avg nodes": 1}


def tree_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The sweep's tree rows (AR rows are each run's baseline)."""
    rows = experiment_rows(df, EXPERIMENT, grid=True)
    return require(rows[rows["family"] == "tree"], "tree runs", EXPERIMENT)


def configurations(rows: pd.DataFrame) -> pd.DataFrame:
    """Knobs and metrics, one row per configuration, best speedup first."""
    frame = rows[[*KNOBS, *METRICS]].rename(columns=KNOBS | METRICS)
    return frame.astype({"D": int, "B": int}).sort_values("speedup (×)", ascending=False, kind="stable")


def by_knob(rows: pd.DataFrame, knob: str) -> pd.DataFrame:
    """Mean and max speedup over every configuration sharing one value of `knob`."""
    stats = rows.groupby(knob)["speedup"].agg(["mean", "max", "count"]).reset_index()
    return stats.rename(columns={knob: KNOBS[knob], "mean": "mean speedup (×)", "max": "max speedup (×)",
                                 "count": "configs"})


def tables(df: pd.DataFrame) -> dict[str, Table]:
    """Four summaries of the grid."""
    rows = tree_rows(df)
    configs = configurations(rows)
    best_per_length = configs.loc[configs.groupby("new tokens")["speedup (×)"].idxmax()]
    spread = {"mean speedup (×)": "max", "max speedup (×)": "max"}
    return {
        "table10_top10": Table(configs.head(10), {"speedup (×)": "max"}, DIGITS),
        "table10_best_per_length": Table(best_per_length, {"speedup (×)": "max"}, DIGITS),
        "table10_by_branch": Table(by_knob(rows, "param.branch").astype({"B": int}), spread),
        "table10_by_threshold": Table(by_knob(rows, "param.threshold"), spread, DIGITS),
    }
