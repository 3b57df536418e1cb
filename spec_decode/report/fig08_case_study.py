"""Figure 8: one real drafted tree after "The future of artificial intelligence is", with the target's verdicts."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from spec_decode.report.common import raw
from spec_decode.report.palette import COLUMN_WIDTH, figure
from spec_decode.report.trace import chosen_round, token_text, traced_row, verdicts

ARTIFACT = "Figure 8 (case study tree)"
STYLES = {"accepted": ("#009E73", "white"), "agrees": ("#D9F0E6", "black"), "rejected": ("#F4C7B8", "black"),
          "root": ("#555555", "white"), "pruned": ("#FFFFFF", "#AAAAAA")}


def layout(parents: list[int]) -> dict[int, float]:
    """Vertical position of every node: leaves in depth-first order, a parent at the middle of its children."""
    children: dict[int, list[int]] = {i: [] for i in range(len(parents))}
    for i, p in enumerate(parents):
        if p >= 0:
            children[p].append(i)
    y: dict[int, float] = {}

    def place(node: int) -> None:
        for child in children[node]:
            place(child)
        y[node] = sum(y[c] for c in children[node]) / len(children[node]) if children[node] else len(
            [v for v in y if not children[v]])

    place(0)
    return y


def with_pruned(round_: dict) -> tuple[list[int], list[int], list[float], list[str]]:
    """Nodes plus the pruned children of accepted-path nodes: tokens, parents, probabilities, kinds."""
    ok, path = verdicts(round_), set(round_["accepted"])
    kinds = ["root" if p < 0 else "accepted" if i in path else "agrees" if ok[i] else "rejected"
             for i, p in enumerate(round_["parent"])]
    extra = [c for c in round_["pruned"] if c["parent"] in path]
    return (round_["token"] + [c["token"] for c in extra], round_["parent"] + [c["parent"] for c in extra],
            round_["prob"] + [c["prob"] for c in extra], kinds + ["pruned"] * len(extra))


def figures(df: pd.DataFrame) -> dict[str, Figure]:
    """The chosen round's tree laid out left to right: token and draft probability per node."""
    row = traced_row(df)
    index, round_ = chosen_round(row)
    tokens, parents, probs, kinds = with_pruned(round_)
    text = token_text(row["file"])
    y = layout(parents)
    depth = [0] * len(parents)
    for i, p in enumerate(parents):
        depth[i] = depth[p] + 1 if p >= 0 else 0
    leaves = max(y.values()) + 1
    fig, axes = figure(height=max(2.0, 0.2 * leaves), width=COLUMN_WIDTH)
    ax = axes[0, 0]
    for i, p in enumerate(parents):
        if p >= 0:
            ax.plot([depth[p], depth[i]], [y[p], y[i]], color="#BBBBBB" if kinds[i] == "pruned" else "#777777",
                    linestyle=":" if kinds[i] == "pruned" else "-", linewidth=0.6, zorder=1)
    for i, kind in enumerate(kinds):
        face, ink = STYLES[kind]
        label = text(tokens[i]) if kind == "root" else f"{text(tokens[i])} {probs[i]:.2f}"
        ax.text(depth[i], y[i], label, ha="center", va="center", fontsize=5.5, color=ink, zorder=2,
                bbox=dict(boxstyle="round,pad=0.2", facecolor=face, edgecolor="#AAAAAA" if kind == "pruned" else face,
                          linewidth=0.5))
    _frame(ax, max(depth), leaves)
    prompt = raw(row["file"])["prompts"][0]["text"]
    ax.set_title(f"“{prompt}” → round {index + 1}: {len(round_['accepted']) - 1} accepted + bonus "
                 f"{text(round_['bonus'])}", fontsize=6.5)
    fig.legend(handles=_legend(), loc="outside lower center", ncols=3, fontsize=6)
    return {"fig08_case_study": fig}


def _frame(ax, depth: int, leaves: float) -> None:
    ax.set_xlim(-0.6, depth + 0.6)
    ax.set_ylim(leaves - 0.5, -0.5)
    ax.set_xticks(range(depth + 1))
    ax.set_xlabel("tree depth (draft tokens ahead)")
    ax.set_yticks([])
    ax.grid(False)
    for side in ("left", "top", "right"):
        ax.spines[side].set_visible(False)


def _legend() -> list:
    names = {"root": "last committed token", "accepted": "accepted path", "agrees": "target agrees, path rejected",
             "rejected": "target disagrees", "pruned": "pruned (draft prob.)"}
    handles: list = [Patch(facecolor=STYLES[k][0], edgecolor="#AAAAAA", label=v) for k, v in names.items()]
    return handles + [Line2D([], [], color="#BBBBBB", linestyle=":", label="pruned edge")]
