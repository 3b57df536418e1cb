"""Table 7: cross-dataset comparison, throughput and speedup of each method on each prompt set."""

from __future__ import annotations

import pandas as pd

from spec_decode.report.common import Table, experiment_rows

ARTIFACT = "Table 7 (cross-dataset)"
EXPERIMENT = "cross_dataset"


def tables(df: pd.DataFrame) -> dict[str, Table]:
    """One row per method; per dataset its throughput and speedup."""
    rows = experiment_rows(df, EXPERIMENT, grid=True)
    wide = rows.pivot_table(index="method", columns="dataset", values=["throughput.mean", "speedup"], sort=False)
    frame = pd.DataFrame({"method": wide.index})
    best, digits = {}, {}
    for dataset in rows["dataset"].unique():
        for metric, title, places in (("throughput.mean", "tok/s", 1), ("speedup", "speedup (×)", 2)):
            column = f"{dataset} {title}"
            frame[column] = wide[(metric, dataset)].values
            best[column], digits[column] = "max", places
    return {"table07_cross_dataset": Table(frame, best, digits)}
