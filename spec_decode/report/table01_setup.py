"""Table 1: the setup behind every experiment found (models, precision, hardware, versions, prompts, lengths)."""

from __future__ import annotations

import pandas as pd

from spec_decode.report.common import MissingData, Table, raw

ARTIFACT = "Table 1 (setup)"


def tables(df: pd.DataFrame) -> dict[str, Table]:
    """One row per experiment."""
    if df.empty:
        raise MissingData("no results at all; run: make paper-results (or any experiment, e.g. "
                          "python run.py experiment=main)")
    files = df.groupby("experiment", sort=False)["file"].unique()
    return {"table01_setup": Table(pd.DataFrame([_describe(name, list(paths)) for name, paths in files.items()]))}


def _describe(experiment: str, files: list[str]) -> dict:
    """Models, hardware, versions and prompts of one experiment's runs."""
    runs = [raw(f) for f in files]
    first, env = runs[0], runs[0]["environment"]
    model, info = first["config"]["model"], first["model"]
    lengths = [len(p["ids"]) for run in runs for p in run["prompts"]]
    return {
        "experiment": experiment,
        "target": model.get("target") or f"{model['name']} {model.get('arch', '')}".strip(),
        "draft": model.get("draft") or f"{model['name']} {model.get('arch', '')} (1st layer)".strip(),
        "params (M)": f"{info['target_parameters'] / 1e6:.1f} / {info['draft_parameters'] / 1e6:.1f}",
        "dtype": env["dtype"],
        "device": env["device_name"],
        "torch": env["packages"]["torch"],
        "transformers": env["packages"]["transformers"],
        "prompts": ", ".join(sorted({run["config"]["dataset"]["name"] for run in runs})),
        "n": len(first["prompts"]),
        "prompt tokens": f"{min(lengths)}–{max(lengths)}",
        "new tokens": ", ".join(map(str, sorted({run["config"]["max_new_tokens"] for run in runs}))),
        "warm-up / repeats": f"{first['config']['warmup']} / {first['config']['repeats']}",
    }
