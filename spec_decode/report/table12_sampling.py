"""Table 12: sampling, speedup over AR and tokens per round of each method at each temperature, per prompt set."""

from __future__ import annotations

import pandas as pd

from spec_decode.report.common import Table, experiment_rows

ARTIFACT = "Table 12 (sampling)"
EXPERIMENT = "sampling"
DATASETS = {"wikitext2_local": "WikiText-2", "wikitext2": "WikiText-2", "spec_bench": "Spec-Bench"}  # in this order


def sampling_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The grid's rows, prompt sets in DATASETS' order (others after), temperatures ascending, methods as run."""
    rows = experiment_rows(df, EXPERIMENT, grid=True)
    place = {name: i for i, name in enumerate(DATASETS)}
    key = rows["dataset"].map(lambda d: place.get(d, len(place)))
    return rows.assign(_place=key).sort_values(["_place", "dataset", "temperature"], kind="stable").drop(
        columns="_place").reset_index(drop=True)


def dataset_title(dataset: str) -> str:
    """How tables and figures name a prompt set."""
    return DATASETS.get(dataset, dataset)


def tables(df: pd.DataFrame) -> dict[str, Table]:
    """One row per method; per prompt set and temperature its speedup (Spec-Bench: overall) and tokens per round."""
    rows = sampling_rows(df)
    frame = pd.DataFrame({"method": rows["method"].unique()})
    best, digits = {}, {}
    for (dataset, temperature), group in rows.groupby(["dataset", "temperature"], sort=False):
        for metric, title in (("speedup", "speedup (×)"), ("tokens_per_round", "tok/round")):
            column = f"{dataset_title(dataset)} T={temperature:g} {title}"
            frame[column] = frame["method"].map(group.groupby("method")[metric].mean())
            best[column], digits[column] = "max", 2
    return {"table12_sampling": Table(frame, best, digits)}
