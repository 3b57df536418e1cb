"""Table 13: batch size > 1, per batch size and method: throughput, speedup over batched AR at that batch size,
tokens per round per row, per-row latency, the run's peak memory, and rows equal to batch-1 AR."""

from __future__ import annotations

import pandas as pd

from spec_decode.report.common import Table, experiment_rows, raw

ARTIFACT = "Table 13 (batch size)"
EXPERIMENT = "batch_scaling"


def batch_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The grid's rows by batch size, methods as run (each run's newest file per batch size)."""
    rows = experiment_rows(df, EXPERIMENT, grid=True)
    newest = rows.sort_values("started_at", kind="stable").groupby("batch_size")["file"].last()
    rows = rows[rows["file"].isin(newest.values)]
    return rows.sort_values("batch_size", kind="stable").reset_index(drop=True)


def not_batched(rows: pd.DataFrame) -> dict[str, str]:
    """Methods a batched run could not run, with transformers' own message (recorded by every batched run)."""
    refused = {}
    for file in rows.loc[rows["batch_size"] > 1, "file"].unique():
        refused |= (raw(file).get("batching") or {}).get("not_batched", {})
    return refused


def row_latency(row: pd.Series) -> float:
    """Mean seconds from a row's start to its last token: batched runs' per-row latency; at batch 1 a sample's time."""
    latency = row.get("batch.row_latency_s.mean", float("nan"))
    if latency == latency:
        return latency
    times = [sample["seconds"] for sample in raw(row["file"])["methods"][row["method"]].get("samples", [])]
    return sum(times) / len(times) if times else float("nan")


def tables(df: pd.DataFrame) -> dict[str, Table]:
    rows = batch_rows(df)
    exact = rows.get("batch.rows_exact", pd.Series(float("nan"), index=rows.index))
    compared = rows.get("batch.rows_compared", pd.Series(float("nan"), index=rows.index))
    frame = pd.DataFrame({
        "batch": rows["batch_size"], "method": rows["method"], "tok/s": rows["throughput.mean"],
        "speedup over AR (×)": rows["speedup"], "tok/round/row": rows["tokens_per_round"],
        "row latency (s)": rows.apply(row_latency, axis=1),
        "peak RSS (MB)": rows.get("memory.peak_rss_mb", rows.get("memory.peak_allocated_mb")),
        "rows = batch-1 AR": [f"{e:.0f}/{c:.0f}" if c == c else "(batch 1)" for e, c in zip(exact, compared,
                                                                                          strict=True)],
        "note": "",
    })
    shown = set(frame.loc[frame["batch"] == 1, "method"])
    for method, message in not_batched(rows).items():
        if method in shown:
            for batch in sorted(set(frame["batch"]) - {1}):
                frame.loc[len(frame)] = {"batch": batch, "method": method, "note": f"not supported: {message}"}
    frame = frame.sort_values("batch", kind="stable").reset_index(drop=True)
    return {"table13_batching": Table(frame, {}, {"tok/s": 1, "speedup over AR (×)": 2, "tok/round/row": 2,
                                                  "row latency (s)": 2, "peak RSS (MB)": 0})}
