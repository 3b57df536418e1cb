"""Figure 10: timeline of AR, Linear and Tree over the same prompt, from recorded per-round forward times."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from spec_decode.report.common import MissingData, command, experiment_rows, samples
from spec_decode.report.palette import PHASES, figure

ARTIFACT = "Figure 10 (timeline)"
EXPERIMENT = "timeline"
FAMILIES = ("ar", "linear", "tree")


def phases(sample: dict) -> list[tuple[str, float, float]]:
    """(phase, start ms, length ms) of one generation: prefill, then per round draft, verify and the rest."""
    segments, now = [("prefill", 0.0, 1e3 * sample["ttft_s"])], 1e3 * sample["ttft_s"]
    for total, draft, verify in zip(sample["round_times_s"], sample["draft_forward_s_per_round"],
                                    sample["target_forward_s_per_round"], strict=True):
        for phase, length in (("draft", draft), ("verify", verify), ("other", total - draft - verify)):
            segments.append((phase, now, 1e3 * max(length, 0.0)))
            now += 1e3 * max(length, 0.0)
    return segments


def figures(df: pd.DataFrame) -> dict[str, Figure]:
    """One lane per method (first prompt, first repeat); each round's draft and verify phases as bars."""
    rows = experiment_rows(df, EXPERIMENT)
    picked = [rows[rows["family"] == f].iloc[0] for f in FAMILIES if (rows["family"] == f).any()]
    runs = [samples(row)[0] for row in picked]
    if not runs or not all(run.get("target_forward_s_per_round") for run in runs):
        raise MissingData(f"no per-round forward times in {EXPERIMENT!r} (run with profile=true); "
                          f"run: {command(EXPERIMENT)}")
    fig, axes = figure(height=0.45 * len(runs) + 0.9)
    ax = axes[0, 0]
    for lane, run in enumerate(runs):
        for phase, start, length in phases(run):
            ax.broken_barh([(start, length)], (lane - 0.35, 0.7), facecolors=PHASES[phase],
                           edgecolor="white", linewidth=0.2)
        _, start, length = phases(run)[-1]
        rounds = len(run["round_times_s"])
        ax.text(start + length, lane, f" {run['new_tokens']} tok, {rounds} rounds", va="center", fontsize=6)
    ax.set_yticks(range(len(picked)), [row["method"] for row in picked])
    ax.invert_yaxis()
    ax.set_xlabel("time since the prompt arrived (ms)")
    ax.set_xlim(0, ax.get_xlim()[1] * 1.3)
    ax.grid(axis="y", visible=False)
    fig.legend(handles=[Patch(color=c, label=p) for p, c in PHASES.items()], loc="outside upper center", ncols=4)
    return {"fig10_timeline": fig}
