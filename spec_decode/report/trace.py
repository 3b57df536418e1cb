"""Recorded tree rounds (the `trace` of tree methods run with trace_rounds > 0) and their token text."""

from __future__ import annotations

import numpy as np
import pandas as pd

from spec_decode.report.common import MissingData, command, experiment_rows, raw, samples

EXPERIMENT = "case_study"


def traced_row(df: pd.DataFrame) -> pd.Series:
    """The case study's tree row whose first sample holds a trace."""
    rows = experiment_rows(df, EXPERIMENT)
    for _, row in rows[rows["family"] == "tree"].iterrows():
        if samples(row)[0].get("trace"):
            return row
    raise MissingData(f"no tree trace in experiment {EXPERIMENT!r} (run with trace_rounds>0); "
                      f"run: {command(EXPERIMENT)}")


def chosen_round(row: pd.Series) -> tuple[int, dict]:
    """The traced round (first prompt, first repeat) with the longest accepted path; the earliest on ties."""
    rounds = samples(row)[0]["trace"]
    index = max(range(len(rounds)), key=lambda i: (len(rounds[i]["accepted"]), -i))
    return index, rounds[index]


def ancestors(parents: list[int]) -> np.ndarray:
    """Bool (n, n): node j is node i or one of its ancestors, the tree attention mask rebuilt from parents."""
    n = len(parents)
    mask = np.eye(n, dtype=bool)
    for i in range(n):
        j = parents[i]
        while j >= 0:
            mask[i, j] = True
            j = parents[j]
    return mask


def verdicts(round_: dict) -> list[bool]:
    """Per node: the target's greedy token after the node's parent equals the node's token (root: True)."""
    nxt = round_["target_next"]
    return [p < 0 or nxt[p] == t for t, p in zip(round_["token"], round_["parent"], strict=True)]


def token_text(file: str):
    """A function id -> readable text with the run's tokenizer; `#id` when it cannot be loaded."""
    from spec_decode.models import load_tokenizer

    try:
        tokenizer = load_tokenizer(raw(file)["config"]["model"])
    except (OSError, ValueError, KeyError):
        return lambda token: f"#{token}"
    return lambda token: visible(tokenizer.decode([token]))


def visible(text: str) -> str:
    """Spaces and line breaks made visible in a token's text."""
    text = text.replace(" ", "␣").replace("\n", "↵")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text) or "∅"
