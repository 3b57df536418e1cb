"""Figure 9: the tree attention mask of a recorded verification round beside a linear round's causal mask."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from spec_decode.report.common import experiment_rows, per_round, require
from spec_decode.report.palette import COLORS, figure
from spec_decode.report.trace import EXPERIMENT, ancestors, chosen_round, traced_row

ARTIFACT = "Figure 9 (attention masks)"


def figures(df: pd.DataFrame) -> dict[str, Figure]:
    """Left: causal mask of the first linear round (pending token + its drafts); right: the tree's mask."""
    tree_row = traced_row(df)
    index, round_ = chosen_round(tree_row)
    rows = experiment_rows(df, EXPERIMENT)
    linear = require(rows[rows["family"] == "linear"], "linear run", EXPERIMENT).iloc[0]
    drafted = per_round(linear, "drafted_per_round")[0]
    causal = np.tril(np.ones((drafted + 1, drafted + 1), dtype=bool))
    tree = ancestors(round_["parent"])
    fig, axes = figure(1, 2, height=2.2)
    _mask(axes[0, 0], causal, COLORS["linear"], f"{linear['method']}\nround 1: {drafted} drafts")
    _mask(axes[0, 1], tree, COLORS["tree"], f"{tree_row['method']}\nround {index + 1}: {len(tree) - 1} nodes")
    return {"fig09_masks": fig}


def _mask(ax, mask: np.ndarray, color: str, title: str) -> None:
    """A boolean mask as an image: coloured = attends (the committed prefix, always visible, is left out)."""
    ax.imshow(np.where(mask, 1.0, np.nan), cmap=_single(color), vmin=0, vmax=1, interpolation="nearest")
    ax.set_facecolor("#F2F2F2")
    ax.set_title(title)
    ax.set_xlabel("key (node, BFS order)")
    ax.set_ylabel("query (node, BFS order)")
    ax.grid(False)
    ticks = np.arange(0, len(mask), max(1, -(-len(mask) // 6)))
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)


def _single(color: str):
    from matplotlib.colors import ListedColormap

    return ListedColormap([color])
