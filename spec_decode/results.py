"""Result files: one JSON per run, written atomically; many loaded into one DataFrame."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd
import torch

SCHEMA_VERSION = 1
RESULT_FILE = "result.json"
PACKAGES = ("torch", "transformers", "datasets", "hydra-core", "spec_decode")


def write_atomic(path: Path, payload: dict) -> None:
    """Write JSON through a temporary file and a rename, so a killed run never leaves a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=1, default=_jsonable)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_complete(path: Path) -> bool:
    """A result file exists, parses, and was written by a run that finished."""
    try:
        return json.loads(path.read_text()).get("complete") is True
    except (OSError, ValueError):
        return False


def environment(device: torch.device, dtype: str) -> dict:
    """Versions, hardware, threads, host and git state: how the numbers were obtained."""
    return {
        "packages": {name: _version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "cuda": torch.version.cuda,
        "dtype": dtype,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "git": _git_state(),
    }


def load_results(paths) -> pd.DataFrame:
    """Result files (or folders searched recursively) as one row per method per run."""
    rows = []
    for file in _result_files(paths):
        run = json.loads(file.read_text())
        for method in run["summary"]:
            rows.append(_row(run, method, file))
    return pd.DataFrame(rows)


def _row(run: dict, summary: dict, file: Path) -> dict:
    flat = pd.json_normalize(summary, sep=".").iloc[0].to_dict()
    cfg = run["config"]
    return {"file": str(file), "experiment": cfg.get("experiment_name"), "model": cfg["model"]["name"],
            "dataset": cfg["dataset"]["name"], "max_new_tokens": cfg["max_new_tokens"],
            "interleave": cfg.get("interleave", False), "decoder": run["methods"][summary["method"]]["method"],
            "device_name": run["environment"]["device_name"], "dtype": run["environment"]["dtype"],
            **{f"param.{k}": v for k, v in run["methods"][summary["method"]]["params"].items()}, **flat}


def _result_files(paths) -> list[Path]:
    files = []
    for path in map(Path, [paths] if isinstance(paths, (str, Path)) else paths):
        files += sorted(path.rglob(RESULT_FILE)) if path.is_dir() else [path]
    return [f for f in files if is_complete(f)]


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _git_state() -> dict:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5,
                                 cwd=Path(__file__).parent)
            return out.stdout.strip() if out.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            return None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def _jsonable(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
