"""Table 6: verification efficiency, draft tokens verified per round, tokens accepted per round, their ratio."""

from __future__ import annotations

import numpy as np
import pandas as pd

from spec_decode.report.common import Table, experiment_rows, per_round, require

ARTIFACT = "Table 6 (verification efficiency)"
EXPERIMENT = "verification"


def tables(df: pd.DataFrame) -> dict[str, Table]:
    """One row per speculative method, from its per-round drafted and accepted counts."""
    rows = experiment_rows(df, EXPERIMENT)
    rows = require(rows[rows["family"].isin(["linear", "tree"])], "linear or tree runs", EXPERIMENT)
    verified = [float(np.mean(per_round(r, "drafted_per_round"))) for _, r in rows.iterrows()]
    accepted = [float(np.mean(per_round(r, "accepted_per_round"))) for _, r in rows.iterrows()]
    frame = pd.DataFrame({
        "method": rows["method"],
        "verified/round": verified,
        "accepted/round": accepted,
        "accepted/verified (%)": 100 * np.divide(accepted, verified),
        "tokens/round": rows["tokens_per_round"],
        "speedup (×)": rows["speedup"],
    })
    best = {"accepted/round": "max", "accepted/verified (%)": "max", "tokens/round": "max", "speedup (×)": "max"}
    return {"table06_verification": Table(frame, best, {"accepted/verified (%)": 1})}
