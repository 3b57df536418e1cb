"""Table 5: latency, time to first token and time per output token of every method."""

from __future__ import annotations

import pandas as pd

from spec_decode.report.common import Table, experiment_rows

ARTIFACT = "Table 5 (latency)"
EXPERIMENT = "latency"


def tables(df: pd.DataFrame) -> dict[str, Table]:
    """One row per method: TTFT and TPOT (mean and p90, milliseconds) and throughput."""
    rows = experiment_rows(df, EXPERIMENT)
    frame = pd.DataFrame({
        "method": rows["method"],
        "TTFT (ms)": 1e3 * rows["ttft_s.mean"],
        "TTFT p90 (ms)": 1e3 * rows["ttft_s.p90"],
        "TPOT (ms)": 1e3 * rows["tpot_s.mean"],
        "TPOT p90 (ms)": 1e3 * rows["tpot_s.p90"],
        "tok/s": rows["throughput.mean"],
    })
    best = {"TTFT (ms)": "min", "TTFT p90 (ms)": "min", "TPOT (ms)": "min", "TPOT p90 (ms)": "min", "tok/s": "max"}
    return {"table05_latency": Table(frame, best, {"tok/s": 1})}
