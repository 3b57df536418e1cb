"""Figure 3: length scaling, the best Linear and the best Tree speedup at each generation length."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from spec_decode.report.common import experiment_rows
from spec_decode.report.palette import COLORS, figure, name
from spec_decode.report.table04_length import EXPERIMENT, best_per_length

ARTIFACT = "Figure 3 (length scaling)"


def figures(df: pd.DataFrame) -> dict[str, Figure]:
    """Speedup against generated tokens (log scale), AR as the dashed line at 1."""
    rows = experiment_rows(df, EXPERIMENT, grid=True)
    fig, axes = figure()
    ax = axes[0, 0]
    for family in ("linear", "tree"):
        best = best_per_length(rows, family)
        ax.plot(best.index, best["speedup"], marker="o", markersize=3, color=COLORS[family],
                label=f"{name(family)} (best per length)")
    ax.axhline(1.0, color=COLORS["ar"], linestyle="--", linewidth=0.8, label="AR")
    ax.set_xscale("log")
    lengths = sorted(rows["max_new_tokens"].unique())
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.minorticks_off()
    ax.set_xlabel("generated tokens")
    ax.set_ylabel("speedup over AR (×)")
    fig.legend(loc="outside upper center", ncols=3)
    return {"fig03_length": fig}
