"""Figure 11: Spec-Bench per category, speedup over AR of each method on each task category and overall."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from spec_decode.report.common import experiment_rows
from spec_decode.report.palette import COLUMN_WIDTH, color, figure
from spec_decode.report.table11_spec_bench import CATEGORIES, EXPERIMENT, OVERALL, categories

ARTIFACT = "Figure 11 (Spec-Bench per category)"
HATCHES = ("", "///", "...", "xxx", "\\\\\\")  # methods that share a family colour differ by hatch


def figures(df: pd.DataFrame) -> dict[str, Figure]:
    """Grouped bars: x = category (+ Overall), one bar per method in its family's colour, AR = 1 dashed."""
    rows = experiment_rows(df, EXPERIMENT)
    columns = [f"by_category.{c}.speedup" for c in categories(rows)] + ["speedup"]
    titles = [CATEGORIES[c.split(".")[1]] for c in columns[:-1]] + [OVERALL]
    fig, axes = figure(1, 1, height=2.4, width=2 * COLUMN_WIDTH)
    ax, x, width = axes[0, 0], np.arange(len(columns)), 0.8 / len(rows)
    colours = rows["family"].map(color)
    for i, row in rows.iterrows():
        hatch = HATCHES[(colours.iloc[:i] == colours[i]).sum() % len(HATCHES)]
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, row[columns].astype(float), width, label=row["method"],
               color=colours[i], hatch=hatch, edgecolor="white", linewidth=0.4)
    ax.axhline(1.0, color="#555555", linestyle="--", linewidth=0.8)
    ax.set_xticks(x, [title.replace(" ", "\n", 1) for title in titles])
    ax.grid(axis="x", visible=False)
    ax.set_ylabel("speedup over AR (×)")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside upper center", ncols=min(len(rows), 7))
    return {"fig11_spec_bench": fig}
