"""Figure 2: tree configuration, speedup, tokens per round and tree size across depth, one line per branch."""

from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from spec_decode.report.fig01_sweep import around, best_config
from spec_decode.report.palette import COLORS, figure
from spec_decode.report.table10_sweep import tree_rows

ARTIFACT = "Figure 2 (tree configuration)"
PANELS = {"speedup": "speedup (×)", "tokens_per_round": "tokens/round", "mean_tree_nodes": "nodes/round"}


def figures(df: pd.DataFrame) -> dict[str, Figure]:
    """Three panels over D, one line per B, at the best configuration's τ and length."""
    rows = tree_rows(df)
    best = best_config(rows)
    data = around(rows, best, "param.depth", "param.branch")
    branches = sorted(data["param.branch"].unique())
    shades = sns.light_palette(COLORS["tree"], n_colors=len(branches) + 1)[1:]
    fig, axes = figure(3, 1, height=1.4, sharex=True)
    for ax, (metric, label) in zip(axes[:, 0], PANELS.items(), strict=True):
        for branch, shade in zip(branches, shades, strict=True):
            line = data[data["param.branch"] == branch]
            ax.plot(line["param.depth"], line[metric], marker="o", markersize=3, color=shade, label=f"B={branch:g}")
        ax.set_ylabel(label)
    axes[0, 0].axhline(1.0, color=COLORS["ar"], linestyle="--", linewidth=0.8)
    axes[-1, 0].set_xlabel("depth D")
    fig.align_ylabels(axes[:, 0])
    axes[-1, 0].set_xticks(sorted(data["param.depth"].unique()))
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside upper center", ncols=len(branches),
               title=f"τ={best['param.threshold']:g}, {int(best['max_new_tokens'])} tokens")
    return {"fig02_tree_config": fig}
