"""Figure 6: the progressive ablation as bars, the unpruned-tree step highlighted."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from spec_decode.report.common import experiment_rows
from spec_decode.report.palette import color, figure
from spec_decode.report.table03_progressive import EXPERIMENT

ARTIFACT = "Figure 6 (progressive ablation)"


def figures(df: pd.DataFrame) -> dict[str, Figure]:
    """One bar per step (config order) with its speedup; a tree step with τ=0 is hatched and annotated."""
    rows = experiment_rows(df, EXPERIMENT)
    fig, axes = figure(height=2.2)
    ax = axes[0, 0]
    unpruned = (rows["family"] == "tree") & (rows["param.threshold"] == 0)
    bars = ax.bar(range(len(rows)), rows["speedup"], color=rows["family"].map(color),
                  hatch=["///" if u else "" for u in unpruned], edgecolor="black", linewidth=0.5)
    ax.bar_label(bars, fmt="%.2f×", fontsize=6, padding=1)
    for i in rows.index[unpruned]:
        ax.annotate("no pruning", (i, rows.loc[i, "speedup"]), xytext=(0, 9), textcoords="offset points",
                    ha="center", fontsize=6, color="black")
    ax.axhline(1.0, color="#555555", linestyle="--", linewidth=0.8)
    ax.set_xticks(range(len(rows)), rows["method"], rotation=20, ha="right")
    ax.set_ylabel("speedup over AR (×)")
    ax.set_ylim(0, rows["speedup"].max() * 1.3)
    return {"fig06_ablation": fig}
