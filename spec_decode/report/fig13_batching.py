"""Figure 13: batch size > 1, speedup over batched AR at the same batch size (left) and throughput (right) against
the batch size, one line per method."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from spec_decode.report.fig12_sampling import MARKERS
from spec_decode.report.palette import COLUMN_WIDTH, color, figure
from spec_decode.report.table13_batching import batch_rows

ARTIFACT = "Figure 13 (batch size)"


def figures(df: pd.DataFrame) -> dict[str, Figure]:
    rows = batch_rows(df)
    fig, axes = figure(1, 2, height=2.3, width=2 * COLUMN_WIDTH)
    speed, rate = axes[0]
    families = rows.drop_duplicates("method").set_index("method")["family"]
    for method, group in rows.groupby("method", sort=False):
        group = group.sort_values("batch_size")
        kin = list(families[families == families[method]].index)  # methods sharing the colour differ by marker
        style = {"label": method, "color": color(families[method]), "marker": MARKERS[kin.index(method) % len(MARKERS)],
                 "markersize": 3.5, "linewidth": 1.1}
        if group["family"].iloc[0] != "ar":
            speed.plot(group["batch_size"], group["speedup"], **style)
        rate.plot(group["batch_size"], group["throughput.mean"], **style)
    speed.axhline(1.0, color="#555555", linestyle="--", linewidth=0.8)
    speed.set_ylabel("speedup over AR at that batch (×)")
    rate.set_ylabel("throughput (tok/s, all rows)")
    for ax in (speed, rate):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(rows["batch_size"].unique()), labels=[str(b) for b in sorted(rows["batch_size"].unique())])
        ax.set_xlabel("batch size")
    legend = {label: line for ax in (speed, rate) for line, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    fig.legend(legend.values(), legend.keys(), loc="outside upper center", ncols=min(len(legend), 5))
    return {"fig13_batching": fig}
