"""Figure 1: the parameter sweep in six panels, each varying one knob around the best configuration."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from spec_decode.report.common import per_round
from spec_decode.report.palette import COLORS, figure
from spec_decode.report.table10_sweep import tree_rows

ARTIFACT = "Figure 1 (parameter sweep)"
KNOBS = ("param.depth", "param.branch", "param.threshold", "max_new_tokens")
TITLES = {"param.depth": "depth D", "param.branch": "branch factor B", "param.threshold": "threshold τ",
          "max_new_tokens": "generated tokens"}


def best_config(rows: pd.DataFrame) -> pd.Series:
    """The configuration with the highest speedup: every panel varies one knob around it."""
    return rows.loc[rows["speedup"].idxmax()]


def around(rows: pd.DataFrame, best: pd.Series, *vary: str) -> pd.DataFrame:
    """Rows equal to `best` in every knob but `vary`, averaged per configuration."""
    fixed = [k for k in KNOBS if k not in vary]
    mask = np.logical_and.reduce([rows[k] == best[k] for k in fixed]) if fixed else slice(None)
    numeric = ["speedup", "tokens_per_round", "mean_tree_nodes"]
    return rows[mask].groupby(list(vary))[numeric].mean().reset_index()


def figures(df: pd.DataFrame) -> dict[str, Figure]:
    """Speedup vs D, B, τ and length; tree size over D × B; accepted-length histogram of the best run."""
    rows = tree_rows(df)
    best = best_config(rows)
    fig, axes = figure(3, 2, height=1.75)
    for ax, knob in zip(axes.flat, KNOBS, strict=False):
        _speedup_panel(ax, around(rows, best, knob), knob, best)
    _size_heatmap(axes[2, 0], around(rows, best, "param.depth", "param.branch"), fig)
    _histogram(axes[2, 1], per_round(best, "accepted_per_round"))
    fig.suptitle(_caption(best), fontsize=7)
    return {"fig01_sweep": fig}


def _speedup_panel(ax, data: pd.DataFrame, knob: str, best: pd.Series) -> None:
    ax.plot(data[knob], data["speedup"], marker="o", color=COLORS["tree"], markersize=3)
    ax.axhline(1.0, color=COLORS["ar"], linestyle="--", linewidth=0.8)
    ax.axvline(best[knob], color="#bbbbbb", linewidth=0.6, zorder=0)
    ax.set_xlabel(TITLES[knob])
    ax.set_ylabel("speedup over AR (×)")
    if knob != "param.threshold":
        ax.set_xticks(sorted(data[knob].unique()))


def _size_heatmap(ax, data: pd.DataFrame, fig) -> None:
    grid = data.pivot(index="param.branch", columns="param.depth", values="mean_tree_nodes")
    image = ax.imshow(grid.values, aspect="auto", cmap="Oranges", origin="lower")
    ax.set_xticks(range(grid.shape[1]), [str(int(c)) for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [str(int(i)) for i in grid.index])
    ax.set_xlabel("depth D")
    ax.set_ylabel("branch factor B")
    ax.grid(False)
    fig.colorbar(image, ax=ax, label="tree size (nodes/round)")


def _histogram(ax, accepted: list[int]) -> None:
    values = np.asarray(accepted)
    bins = np.arange(values.max() + 2) - 0.5 if values.size else 1
    ax.hist(values, bins=bins, color=COLORS["tree"], weights=np.full(values.size, 100 / max(values.size, 1)))
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("accepted draft tokens per round")
    ax.set_ylabel("rounds (%)")


def _caption(best: pd.Series) -> str:
    return (f"around the best: D={int(best['param.depth'])}, B={int(best['param.branch'])}, "
            f"τ={best['param.threshold']:g}, {int(best['max_new_tokens'])} tokens ({best['speedup']:.2f}×)")
