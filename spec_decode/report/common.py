"""What every report module shares: selecting an experiment's rows, raw samples, writing tables and figures."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path

import pandas as pd
import yaml
from matplotlib.figure import Figure

from spec_decode.config import CONF_DIR


class MissingData(LookupError):
    """The results lack what an artifact needs; the message names the experiment to run."""


@dataclass
class Table:
    """A numeric table, which columns have a best value ('max' or 'min'), decimals per column, and the rows (by
    position) left out of the best (e.g. published reference rows beside this harness's own)."""

    frame: pd.DataFrame
    best: dict[str, str] = field(default_factory=dict)
    digits: dict[str, int] = field(default_factory=dict)
    unranked: list[int] = field(default_factory=list)


def command(experiment: str) -> str:
    """The command that produces an experiment's results (`-m` when its config holds a grid)."""
    file = CONF_DIR / "experiment" / f"{experiment}.yaml"
    grid = file.is_file() and "params" in ((yaml.safe_load(file.read_text()) or {}).get("hydra") or {}).get(
        "sweeper", {})
    return f"python run.py {'-m ' if grid else ''}experiment={experiment}"


def experiment_rows(df: pd.DataFrame, experiment: str, grid: bool = False) -> pd.DataFrame:
    """The rows of one experiment (of its newest run unless it is a grid); MissingData when there are none."""
    rows = df[df["experiment"] == experiment] if "experiment" in df else df.iloc[0:0]
    if rows.empty:
        raise MissingData(f"no results of experiment {experiment!r}; run: {command(experiment)}")
    if not grid:
        rows = rows[rows["file"] == newest_file(rows)]
    return rows.assign(family=rows.apply(family, axis=1)).reset_index(drop=True)


def newest_file(rows: pd.DataFrame) -> str:
    """The file of the run that started last (by its recorded `started_at`; files without one count as oldest)."""
    started = rows.get("started_at", pd.Series(None, index=rows.index)).fillna("")
    return rows.assign(_started=started).sort_values(["_started", "file"])["file"].iloc[-1]


def family(row: pd.Series) -> str:
    """The method a row measured (ar, linear, tree, streaming_tree, ...) whatever its label."""
    return _method_names(row["file"])[row["method"]]


@cache
def _method_names(file: str) -> dict[str, str]:
    return {label: run["method"] for label, run in raw(file)["methods"].items()}


@lru_cache(maxsize=64)
def raw(file: str) -> dict:
    """A whole result file (prompts, config, raw samples)."""
    try:
        return json.loads(Path(file).read_text())
    except (OSError, ValueError) as err:
        raise MissingData(f"cannot read {file}: {err}") from err


def samples(row: pd.Series) -> list[dict]:
    """The raw samples (per prompt and repeat) behind one row."""
    return raw(row["file"])["methods"][row["method"]]["samples"]


def per_round(row: pd.Series, key: str) -> list:
    """One per-round series (e.g. `accepted_per_round`) over all of a row's samples."""
    return [value for sample in samples(row) for value in sample.get(key, [])]


def require(rows: pd.DataFrame, what: str, experiment: str) -> pd.DataFrame:
    """`rows`, or MissingData naming what is absent and the experiment that provides it."""
    if rows.empty:
        raise MissingData(f"no {what} in experiment {experiment!r}; run: {command(experiment)}")
    return rows


def memory_mb(rows: pd.DataFrame) -> pd.Series:
    """Peak memory in MB: CUDA peak allocated on a GPU, peak process RSS on a CPU; NaN where interleaved methods
    shared one peak (it belongs to no single method)."""
    shared = rows.get("memory.shared_by_interleaved_methods", pd.Series(False, index=rows.index)).eq(True)
    for column in ("memory.peak_allocated_mb", "memory.peak_rss_mb"):
        if column in rows and rows[column].notna().any():
            return rows[column].mask(shared)
    return pd.Series(math.nan, index=rows.index)


def write_table(table: Table, out: Path, name: str) -> list[Path]:
    """The table as LaTeX (booktabs) and Markdown, the best value of each marked column in bold."""
    out.mkdir(parents=True, exist_ok=True)
    text = _formatted(table)
    tex, md = out / f"{name}.tex", out / f"{name}.md"
    latex = text.map(lambda c: _tex(c)).rename(columns=_tex)
    tex.write_text(latex.to_latex(index=False, escape=False, column_format="l" * latex.shape[1]))
    md.write_text(_markdown(text.map(lambda c: c.replace("\\bf ", "**", 1) + "**" if c.startswith("\\bf ") else c)))
    return [tex, md]


def write_figure(figure: Figure, out: Path, name: str) -> list[Path]:
    """The figure as PDF and PNG."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.pdf", out / f"{name}.png"]
    for path in paths:
        figure.savefig(path, bbox_inches="tight", dpi=200)
    return paths


def cell(value, digits: int) -> str:
    """How a table shows one value: fixed decimals for floats, a dash for missing."""
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return "–" if value is None else str(value)


def _formatted(table: Table) -> pd.DataFrame:
    frame = table.frame.reset_index(drop=True)
    text = pd.DataFrame({c: [cell(v, table.digits.get(c, 2)) for v in frame[c]] for c in frame.columns})
    for column, how in table.best.items():
        values = pd.to_numeric(frame[column], errors="coerce").drop(index=table.unranked)
        if values.notna().any():
            best = values.max() if how == "max" else values.min()
            for i in values.index[values == best]:
                text.loc[i, column] = "\\bf " + text.loc[i, column]
    return text


def _tex(value: str) -> str:
    bold = value.startswith("\\bf ")
    value = value.removeprefix("\\bf ")
    for char, escaped in {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                          "{": r"\{", "}": r"\}", "τ": r"$\tau$", "×": r"$\times$", "–": "--", "→": r"$\to$",
                          "≥": r"$\geq$"}.items():
        value = value.replace(char, escaped)
    return f"\\textbf{{{value}}}" if bold else value


def _markdown(text: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(text.columns) + " |", "|" + "|".join(" --- " for _ in text.columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in text.itertuples(index=False)]
    return "\n".join(lines) + "\n"
