"""Table 2: main results (throughput, speedup, acceptance, tokens per round) of every method at one length."""

from __future__ import annotations

import pandas as pd

from spec_decode.report.common import Table, experiment_rows

ARTIFACT = "Table 2 (main results)"
EXPERIMENT = "main"


def tables(df: pd.DataFrame) -> dict[str, Table]:
    """One row per method of the newest `main` run."""
    rows = experiment_rows(df, EXPERIMENT)
    frame = pd.DataFrame({
        "method": rows["method"],
        "tok/s": rows["throughput.mean"],
        "± std": rows["throughput.std"],
        "speedup (×)": rows["speedup"],
        "accept (%)": 100 * rows["acceptance_rate"],
        "accept node-level (%)": 100 * rows["acceptance_node_level"],
        "accept depth-level (%)": 100 * rows["acceptance_depth_level"],
        "tokens/round": rows["tokens_per_round"],
        "exact match (%)": 100 * rows["exact_match.mean"],
    })
    best = {"tok/s": "max", "speedup (×)": "max", "tokens/round": "max"}
    digits = {"tok/s": 1, "± std": 1, "accept (%)": 1, "accept node-level (%)": 1, "accept depth-level (%)": 1,
              "exact match (%)": 1}
    return {"table02_main": Table(frame, best, digits)}
