"""Table 8: prompt-length sensitivity, each method's speedup at each prompt length."""

from __future__ import annotations

import numpy as np
import pandas as pd

from spec_decode.report.common import Table, experiment_rows, raw

ARTIFACT = "Table 8 (prompt length)"
EXPERIMENT = "prompt_length"


def with_prompt_tokens(df: pd.DataFrame) -> pd.DataFrame:
    """The experiment's rows with `prompt_tokens`: the mean prompt length (tokens) of each row's run."""
    rows = experiment_rows(df, EXPERIMENT, grid=True)
    lengths = {f: round(float(np.mean([len(p["ids"]) for p in raw(f)["prompts"]]))) for f in rows["file"].unique()}
    return rows.assign(prompt_tokens=rows["file"].map(lengths))


def tables(df: pd.DataFrame) -> dict[str, Table]:
    """One row per speculative method (AR is 1 by definition); one speedup column per prompt length."""
    rows = with_prompt_tokens(df).query("family != 'ar'")
    wide = rows.pivot_table(index="method", columns="prompt_tokens", values="speedup", sort=False)
    wide = wide[sorted(wide.columns)]
    frame = wide.reset_index()
    frame.columns = ["method", *[f"{c}-token prompts (×)" for c in wide.columns]]
    return {"table08_prompt_length": Table(frame, {c: "max" for c in frame.columns[1:]})}
