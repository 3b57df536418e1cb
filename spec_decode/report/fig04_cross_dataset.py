"""Figure 4: cross-dataset comparison, throughput and speedup of each method per prompt set."""

from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from spec_decode.report.common import experiment_rows
from spec_decode.report.palette import color, figure
from spec_decode.report.table07_cross_dataset import EXPERIMENT

ARTIFACT = "Figure 4 (cross-dataset)"


def figures(df: pd.DataFrame) -> dict[str, Figure]:
    """Two panels of grouped bars: x = dataset, one bar per method in its colour."""
    rows = experiment_rows(df, EXPERIMENT, grid=True)
    palette = dict(zip(rows["method"], rows["family"].map(color), strict=True))
    fig, axes = figure(1, 2, height=2.1)
    for ax, metric, label in ((axes[0, 0], "throughput.mean", "throughput (tokens/s)"),
                              (axes[0, 1], "speedup", "speedup over AR (×)")):
        sns.barplot(rows, x="dataset", y=metric, hue="method", palette=palette, ax=ax, errorbar=None)
        ax.set_ylabel(label)
        ax.set_xlabel("prompt set")
        ax.get_legend().remove()
        ax.tick_params(axis="x", labelrotation=15)
    axes[0, 1].axhline(1.0, color="#555555", linestyle="--", linewidth=0.8)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside upper center", ncols=3)
    return {"fig04_cross_dataset": fig}
