"""Table 9 (part 1): peak memory of every method at each generation length."""

from __future__ import annotations

import pandas as pd

from spec_decode.report.common import Table, experiment_rows, memory_mb

ARTIFACT = "Table 9 (memory footprint)"
EXPERIMENT = "memory"


def tables(df: pd.DataFrame) -> dict[str, Table]:
    """One row per method; one peak-memory column (MB) per length (CUDA peak allocated, or CPU peak RSS)."""
    rows = experiment_rows(df, EXPERIMENT, grid=True)
    kind = "CUDA peak allocated" if rows["memory.kind"].eq("cuda").all() else "peak RSS"
    rows = rows.assign(memory=memory_mb(rows))
    wide = rows.pivot_table(index="method", columns="max_new_tokens", values="memory", sort=False)
    frame = wide.reset_index()
    frame.columns = ["method", *[f"{kind} @ {n} tok (MB)" for n in wide.columns]]
    return {"table09_memory": Table(frame, {c: "min" for c in frame.columns[1:]},
                                    {c: 0 for c in frame.columns[1:]})}
