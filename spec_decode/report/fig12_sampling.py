"""Figure 12: sampling, speedup over AR of each method against temperature, one panel per prompt set."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from spec_decode.report.palette import COLUMN_WIDTH, color, figure
from spec_decode.report.table12_sampling import dataset_title, sampling_rows

ARTIFACT = "Figure 12 (sampling)"
MARKERS = ("o", "s", "^", "D", "v")  # methods that share a family colour differ by marker


def figures(df: pd.DataFrame) -> dict[str, Figure]:
    """Per prompt set: one line per method (AR aside, it is the dashed 1.0) in its family's colour."""
    rows = sampling_rows(df)
    rows = rows[rows["family"] != "ar"]
    methods = rows.drop_duplicates("method")
    colours = dict(zip(methods["method"], methods["family"].map(color), strict=True))
    markers = {m: MARKERS[list(colours.values())[:i].count(colours[m]) % len(MARKERS)]
               for i, m in enumerate(colours)}
    datasets = rows["dataset"].unique()
    fig, axes = figure(1, len(datasets), height=2.3, width=2 * COLUMN_WIDTH, sharey=True)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        lines = rows[rows["dataset"] == dataset].groupby(["method", "temperature"], sort=False)["speedup"].mean()
        for method in colours:
            if method in lines:
                ax.plot(lines[method].index, lines[method].values, label=method, color=colours[method],
                        marker=markers[method], markersize=3.5, linewidth=1.1)
        ax.axhline(1.0, color="#555555", linestyle="--", linewidth=0.8)
        ax.set_title(dataset_title(dataset))
        ax.set_xlabel("temperature")
        ax.set_xticks(sorted(rows["temperature"].unique()))
    axes[0, 0].set_ylabel("speedup over AR (×)")
    legend = {label: line for ax in axes[0] for line, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    fig.legend(legend.values(), legend.keys(), loc="outside upper center", ncols=min(len(legend), 5))
    return {"fig12_sampling": fig}
