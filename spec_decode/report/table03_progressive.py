"""Table 3 (part 2): the progressive ablation, AR -> + draft -> + tree -> + dynamic pruning, in config order."""

from __future__ import annotations

import pandas as pd

from spec_decode.report.common import Table, experiment_rows

ARTIFACT = "Table 3 (progressive ablation)"
EXPERIMENT = "progressive"


def tables(df: pd.DataFrame) -> dict[str, Table]:
    """One row per step: throughput, speedup over AR and the change from the step before."""
    rows = experiment_rows(df, EXPERIMENT)
    frame = pd.DataFrame({
        "step": range(len(rows)),
        "method": rows["method"],
        "tok/s": rows["throughput.mean"],
        "speedup (×)": rows["speedup"],
        "Δ speedup": rows["speedup"].diff(),
        "tokens/round": rows["tokens_per_round"],
        "avg nodes": rows["mean_tree_nodes"],
    })
    digits = {"tok/s": 1, "avg nodes": 1}
    return {"table03_progressive": Table(frame, {"tok/s": "max", "speedup (×)": "max"}, digits)}
