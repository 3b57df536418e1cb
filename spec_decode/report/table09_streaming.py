"""Table 9 (part 2): speculation over a StreamingLLM cache at each cache size and length."""

from __future__ import annotations

import pandas as pd

from spec_decode.report.common import Table, experiment_rows, memory_mb, require

ARTIFACT = "Table 9 (streaming)"
EXPERIMENT = "streaming"


def tables(df: pd.DataFrame) -> dict[str, Table]:
    """One row per streaming method, cache size and length: throughput, speedup, memory, compressions."""
    rows = experiment_rows(df, EXPERIMENT, grid=True)
    rows = require(rows[rows["family"].str.startswith("streaming_")], "streaming runs", EXPERIMENT)
    rows = rows.sort_values(["method", "param.cache_size", "max_new_tokens"], kind="stable")
    frame = pd.DataFrame({
        "method": rows["method"],
        "cache size": rows["param.cache_size"].astype(int),
        "new tokens": rows["max_new_tokens"],
        "tok/s": rows["throughput.mean"],
        "speedup (×)": rows["speedup"],
        "peak memory (MB)": memory_mb(rows),
        "compressions": rows["compressions.mean"],
        "max cache length": rows["cache_max_length"],
    })
    best = {"tok/s": "max", "speedup (×)": "max", "peak memory (MB)": "min"}
    return {"table09_streaming": Table(frame, best, {"tok/s": 1, "peak memory (MB)": 0, "compressions": 1})}
