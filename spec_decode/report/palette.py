"""One colour per method family across every figure, and the publication style (one column wide)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

# Okabe-Ito colours (colour-blind safe); streaming variants are the lighter tone of their method.
COLORS = {
    "ar": "#555555",
    "hf_assisted": "#CC79A7",
    "linear": "#0072B2",
    "eagle": "#0072B2",  # linear and tree speculation with the feature draft (told apart by hatch)
    "eagle_tree": "#D55E00",
    "tree": "#D55E00",
    "streaming_ar": "#999999",
    "streaming_linear": "#56B4E9",
    "streaming_tree": "#E69F00",
    "hf_greedy": "#000000",
    "hf_lookup": "#F0E442",
    "recycling": "#009E73",  # the draft-free trees share a colour (told apart by hatch)
    "retrieval": "#009E73",
}
OTHER = ("#009E73", "#F0E442", "#000000")
NAMES = {"ar": "AR", "hf_assisted": "HF assisted", "hf_greedy": "HF greedy", "hf_lookup": "HF prompt lookup",
         "linear": "Linear", "eagle": "EAGLE-style linear", "eagle_tree": "EAGLE-style tree", "tree": "Tree",
         "recycling": "Token Recycling", "retrieval": "Retrieval",
         "streaming_ar": "Streaming AR", "streaming_linear": "Streaming Linear", "streaming_tree": "Streaming Tree"}
COLUMN_WIDTH = 3.4  # inches: one column of a two-column paper
PHASES = {"prefill": "#777777", "draft": "#56B4E9", "verify": "#D55E00", "other": "#DDDDDD"}


def color(family: str) -> str:
    """The colour of a method family (unknown families get a stable colour of their own)."""
    if family in COLORS:
        return COLORS[family]
    return OTHER[sum(map(ord, family)) % len(OTHER)]


def name(family: str) -> str:
    """How figures name a method family."""
    return NAMES.get(family, family)


def apply_style() -> None:
    """Small serif-free fonts sized for a one-column figure, light grid, no top/right spines."""
    sns.set_theme(context="paper", style="whitegrid", font_scale=0.9)
    plt.rcParams.update({"figure.dpi": 200, "savefig.dpi": 200, "axes.spines.top": False,
                         "axes.spines.right": False, "legend.frameon": False, "pdf.fonttype": 42,
                         "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
                         "legend.fontsize": 7, "figure.constrained_layout.use": True})


def figure(rows: int = 1, cols: int = 1, height: float = 2.3, width: float = COLUMN_WIDTH, **kwargs):
    """A new styled figure one column wide."""
    apply_style()
    return plt.subplots(rows, cols, figsize=(width, height * rows), squeeze=False, **kwargs)
