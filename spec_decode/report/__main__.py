"""Regenerate every table and figure the result files allow; say plainly which could not be made and why."""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from spec_decode.report import MODULES
from spec_decode.report.common import MissingData, write_figure, write_table
from spec_decode.results import load_results


def build(module, df: pd.DataFrame, out: Path) -> list[Path]:
    """Make one module's tables or figures from `df` into `out`; the files written."""
    written: list[Path] = []
    for name, table in (module.tables(df) if hasattr(module, "tables") else {}).items():
        written += write_table(table, out, name)
    for name, figure in (module.figures(df) if hasattr(module, "figures") else {}).items():
        written += write_figure(figure, out, name)
        plt.close(figure)
    return written


def build_all(results: Path, out: Path) -> tuple[list[Path], list[str], list[str]]:
    """Every artifact for every model pair found (one folder per pair): files written, missing, failed."""
    df = load_results(results) if results.exists() else pd.DataFrame()
    groups = {model: df[df["model"] == model] for model in df["model"].unique()} if len(df) else {"": df}
    written, missing, failed = [], [], []
    for model, rows in groups.items():
        for name in MODULES:
            module = importlib.import_module(f"spec_decode.report.{name}")
            where = f"{module.ARTIFACT}{f' [{model}]' if model else ''}"
            try:
                written += build(module, rows.reset_index(drop=True), out / model)
            except MissingData as err:
                missing.append(f"{where}: {err}")
            except Exception as err:  # one broken artifact must not stop the others
                failed.append(f"{where}: {type(err).__name__}: {err}")
                traceback.print_exc()
    return written, missing, failed


def main(argv: list[str] | None = None) -> int:
    """Command line: --results (files or folders) and --out; exit 1 only when an artifact failed on real data."""
    parser = argparse.ArgumentParser(prog="python -m spec_decode.report", description=__doc__)
    parser.add_argument("--results", type=Path, default=Path("results"), help="result file or folder (recursive)")
    parser.add_argument("--out", type=Path, default=Path("figures"), help="output folder (one subfolder per pair)")
    args = parser.parse_args(argv)
    written, missing, failed = build_all(args.results, args.out)
    print(f"wrote {len(written)} files under {args.out}/")
    for line in missing:
        print(f"not made: {line}")
    for line in failed:
        print(f"FAILED: {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
