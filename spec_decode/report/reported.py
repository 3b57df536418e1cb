"""Reported vs reproduced: the study's numbers (experiments/reported.yaml) beside this harness's results."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from spec_decode.report.common import MissingData, Table, cell

ARTIFACT = "Reported vs reproduced"
REPORTED = Path(__file__).resolve().parents[2] / "experiments" / "reported.yaml"
METRICS = {"throughput.mean": "tok/s", "speedup": "speedup (×)", "acceptance_node_level": "accept node-level",
           "acceptance_depth_level": "accept depth-level", "tokens_per_round": "tokens/round"}


def load_reported(path: Path = REPORTED) -> dict:
    """The study's numbers and where they come from."""
    if not path.is_file():
        raise MissingData(f"{path} not found (it holds the study's reported numbers)")
    return yaml.safe_load(path.read_text())


def matching(df: pd.DataFrame, entry: dict) -> pd.DataFrame:
    """The result rows an entry compares with: its experiment's rows equal to every `match` value."""
    rows = df[df["experiment"] == entry["experiment"]]
    for column, value in entry["match"].items():
        rows = rows[rows[column] == value] if column in rows else rows.iloc[0:0]
    return rows


def tables(df: pd.DataFrame) -> dict[str, Table]:
    """One row per reported number: claim, method, metric, reported value, reproduced mean over matching runs."""
    if df.empty:
        raise MissingData("no results to compare with; run: make paper-results (or python run.py experiment=main)")
    reported = load_reported()
    lines = []
    for entry in reported["entries"]:
        rows = matching(df, entry)
        for metric, value in entry["reported"].items():
            ours = rows[metric].mean() if len(rows) else float("nan")
            lines.append({"claim": entry["claim"], "method": entry["match"]["method"], "metric": METRICS[metric],
                          "reported": str(value), "reproduced": cell(ours, _places(value)),
                          "runs": len(rows), "reproduced on": _hardware(rows)})
    frame = pd.DataFrame(lines)
    frame = frame.rename(columns={"reported": f"reported ({reported['models']}, {reported['hardware']})",
                                  "reproduced": f"reproduced ({_models(df)})"})
    return {"reported_vs_reproduced": Table(frame)}


def _places(value: float) -> int:
    """Decimals the study gave a number with (the reproduced one is shown alike)."""
    text = str(value)
    return len(text.split(".")[1]) if "." in text else 0


def _hardware(rows: pd.DataFrame) -> str:
    runs = zip(rows["device_name"], rows["dtype"], rows["max_new_tokens"], strict=True)
    return ", ".join(sorted({f"{d} {t}, {n} new tokens" for d, t, n in runs})) or "–"


def _models(df: pd.DataFrame) -> str:
    return ", ".join(sorted(df["model"].unique()))
