"""Figure 5: prompt-length effect, throughput and speedup of each method against prompt length."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from spec_decode.report.palette import color, figure
from spec_decode.report.table08_prompt_length import with_prompt_tokens

ARTIFACT = "Figure 5 (prompt length)"


def figures(df: pd.DataFrame) -> dict[str, Figure]:
    """Two panels over the mean prompt length (tokens), one line per method."""
    rows = with_prompt_tokens(df).sort_values("prompt_tokens")
    fig, axes = figure(1, 2, height=2.0)
    for ax, metric, label in ((axes[0, 0], "throughput.mean", "throughput (tokens/s)"),
                              (axes[0, 1], "speedup", "speedup over AR (×)")):
        for method, line in rows.groupby("method", sort=False):
            mean = line.groupby("prompt_tokens")[metric].mean()
            ax.plot(mean.index, mean.values, marker="o", markersize=3, color=color(line["family"].iloc[0]),
                    label=method)
        ax.set_xlabel("prompt length (tokens)")
        ax.set_ylabel(label)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside upper center", ncols=3)
    return {"fig05_prompt_length": fig}
