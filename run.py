"""Command line entry point: compose the Hydra config and hand it to the runner.

    python run.py method=tree depth=8 branch=3
    python run.py -m method=tree depth=2,3,4 branch=2,3
    python run.py experiment=compare
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from spec_decode.data import DatasetError
from spec_decode.models import ModelLoadError
from spec_decode.runner import ConfigError, run

GROUPS = ("model", "method", "dataset", "experiment")


def check_group_choices(argv: list[str], conf_dir: Path) -> str | None:
    """Name an unknown config-group choice (e.g. method=nope) in one line, before Hydra composes."""
    for arg in argv:
        group, _, choices = arg.partition("=")
        if group.lstrip("+~") not in GROUPS or not choices:
            continue
        known = sorted(p.stem for p in (conf_dir / group.lstrip("+~")).glob("*.yaml"))
        for choice in choices.split(","):
            if choice not in known and choice != "null":
                return f"unknown {group.lstrip('+~')} {choice!r}; choose one of {known}"
    return None


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> str:
    """Run one configuration; bad input ends with one line on stderr and exit status 2."""
    try:
        return str(run(cfg))
    except (ConfigError, ModelLoadError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    problem = check_group_choices(sys.argv[1:], Path(__file__).parent / "conf")
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    main()
