"""Table 4: length scaling, the best Linear and the best Tree configuration at each generation length."""

from __future__ import annotations

import pandas as pd

from spec_decode.report.common import Table, experiment_rows, require

ARTIFACT = "Table 4 (length scaling)"
EXPERIMENT = "length_scaling"


def best_per_length(rows: pd.DataFrame, family: str) -> pd.DataFrame:
    """For each max_new_tokens, the row of `family` with the highest speedup."""
    subset = require(rows[rows["family"] == family], f"{family} runs", EXPERIMENT)
    return subset.loc[subset.groupby("max_new_tokens")["speedup"].idxmax()].set_index("max_new_tokens")


def tables(df: pd.DataFrame) -> dict[str, Table]:
    """One row per length: AR throughput, best Linear (label, speedup), best Tree (label, speedup)."""
    rows = experiment_rows(df, EXPERIMENT, grid=True)
    ar = rows[rows["family"] == "ar"].groupby("max_new_tokens")["throughput.mean"].mean()
    linear, tree = best_per_length(rows, "linear"), best_per_length(rows, "tree")
    frame = pd.DataFrame({
        "new tokens": ar.index,
        "AR tok/s": ar.values,
        "Linear best": linear["method"].reindex(ar.index).values,
        "Linear speedup (×)": linear["speedup"].reindex(ar.index).values,
        "Tree best": tree["method"].reindex(ar.index).values,
        "Tree speedup (×)": tree["speedup"].reindex(ar.index).values,
    })
    return {"table04_length": Table(frame, {"Linear speedup (×)": "max", "Tree speedup (×)": "max"},
                                    {"AR tok/s": 1})}
