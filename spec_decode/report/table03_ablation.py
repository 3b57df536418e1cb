"""Table 3 (part 1): pruning ablation of one tree shape: no pruning, static node cap, dynamic threshold."""

from __future__ import annotations

import numpy as np
import pandas as pd

from spec_decode.report.common import Table, experiment_rows, per_round, require

ARTIFACT = "Table 3 (pruning ablation)"
EXPERIMENT = "ablation"


def tables(df: pd.DataFrame) -> dict[str, Table]:
    """One row per tree variant: its knobs, speedup, tree size, both acceptances, accepted path length."""
    rows = require(experiment_rows(df, EXPERIMENT).query("family == 'tree'"), "tree variants", EXPERIMENT)
    frame = pd.DataFrame({
        "variant": rows["method"],
        "D": rows["param.depth"].astype(int),
        "B": rows["param.branch"].astype(int),
        "τ": rows["param.threshold"],
        "max nodes": rows["param.max_nodes"].astype(int),
        "tok/s": rows["throughput.mean"],
        "speedup (×)": rows["speedup"],
        "avg nodes": rows["mean_tree_nodes"],
        "accept node-level (%)": 100 * rows["acceptance_node_level"],
        "accept depth-level (%)": 100 * rows["acceptance_depth_level"],
        "path length": [float(np.mean(per_round(r, "accepted_per_round"))) for _, r in rows.iterrows()],
    })
    best = {"tok/s": "max", "speedup (×)": "max", "avg nodes": "min", "path length": "max"}
    digits = {"τ": 2, "tok/s": 1, "avg nodes": 1, "accept node-level (%)": 1, "accept depth-level (%)": 1}
    return {"table03_ablation": Table(frame, best, digits)}
