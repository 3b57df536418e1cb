"""Figure 7: accepted draft tokens per round, Linear vs Tree (histogram and CDF) from the main run's rounds."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from spec_decode.report.common import experiment_rows, per_round, require
from spec_decode.report.palette import COLORS, figure

ARTIFACT = "Figure 7 (accepted tokens per round)"
EXPERIMENT = "main"


def figures(df: pd.DataFrame) -> dict[str, Figure]:
    """Left: share of rounds per accepted length; right: its cumulative distribution."""
    rows = experiment_rows(df, EXPERIMENT)
    picked = [require(rows[rows["family"] == f], f"{f} run", EXPERIMENT).iloc[0] for f in ("linear", "tree")]
    fig, axes = figure(1, 2, height=2.0)
    hist, cdf = axes[0]
    top = max(max(per_round(row, "accepted_per_round"), default=0) for row in picked)
    lengths = np.arange(top + 1)
    width = 0.4
    for offset, row in zip((-width / 2, width / 2), picked, strict=True):
        values = np.asarray(per_round(row, "accepted_per_round"))
        share = np.array([(values == n).mean() * 100 for n in lengths]) if values.size else lengths * 0.0
        style = dict(color=COLORS[row["family"]], label=row["method"])
        hist.bar(lengths + offset, share, width=width, **style)
        cdf.step(lengths, np.cumsum(share), where="post", **style)
    hist.set_xlabel("accepted tokens per round")
    hist.set_ylabel("rounds (%)")
    cdf.set_xlabel("accepted tokens per round")
    cdf.set_ylabel("cumulative rounds (%)")
    cdf.set_ylim(0, 102)
    for ax in (hist, cdf):
        ax.set_xticks(lengths)
    fig.legend(*hist.get_legend_handles_labels(), loc="outside upper center", ncols=2)
    return {"fig07_accepted": fig}
