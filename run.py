"""Command line entry point: compose the Hydra config and hand it to the runner.

    python run.py method=tree depth=8 branch=3
    python run.py -m method=tree depth=2,3,4 branch=2,3
    python run.py experiment=compare
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from spec_decode import sweep
from spec_decode.runner import CONF_DIR, USER_ERRORS, ResultWriteError, run

GROUPS = ("model", "method", "dataset", "experiment")
log = logging.getLogger("run")


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
def main(cfg: DictConfig) -> str | None:
    """Run one configuration. Alone, bad input ends with one `error:` line (exit 2); in a sweep, any failure is
    recorded beside where its result would be and the sweep goes on."""
    sweep.watch_launcher()
    try:
        return str(run(cfg))
    except Exception as err:
        expected = isinstance(err, (*USER_ERRORS, ResultWriteError))
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            _record_failure(cfg, err, expected)
            return None
        if not expected:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1 if isinstance(err, ResultWriteError) else 2)


def _record_failure(cfg: DictConfig, err: Exception, expected: bool) -> None:
    """A sweep job's failure: error.json where its result would be (else in the job's Hydra folder), a note."""
    job = HydraConfig.get().job
    try:
        config, where = OmegaConf.to_container(cfg, resolve=True), [Path(cfg.results_dir).absolute()]
    except Exception:  # a config that cannot even be resolved still gets its error recorded
        config, where = None, []
    where.append(Path(HydraConfig.get().runtime.output_dir))
    saved = sweep.note_failure(job.num, job.override_dirname, err, config, where, expected)
    log.error("configuration failed (%s): %s; recorded in %s", job.override_dirname, err, saved)


def report_failures(notes: list[dict]) -> None:
    """After a sweep: one `error:` line counting the failed configurations, then one line for each."""
    print(f"error: {len(notes)} configuration(s) of this sweep failed (each has an error.json):", file=sys.stderr)
    for note in notes:
        print(f"  #{note['job']} {note['overrides'] or '(no overrides)'}: {note['error']} [{note['file']}]",
              file=sys.stderr)


if __name__ == "__main__":
    problem = check_group_choices(sys.argv[1:], CONF_DIR)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    sweep.start()
    try:
        main()
    finally:
        failures = sweep.finish()
    if failures:
        report_failures(failures)
        sys.exit(1)
