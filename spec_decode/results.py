"""Result files: one JSON per run, written atomically; many loaded into one DataFrame."""

from __future__ import annotations

import json
import math
import os
import platform
import secrets
import socket
import subprocess
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import torch

SCHEMA_VERSION = 1
RESULT_FILE = "result.json"
PACKAGES = ("torch", "transformers", "datasets", "hydra-core", "spec_decode")


NAME_MAX = 255  # bytes per path component on common file systems
IGNORED_KEYS = ("results_dir", "overwrite")  # where a result goes and whether to replace it: not what it measured
GREEDY = {"temperature": 0.0, "top_p": 1.0, "top_k": 0}  # the decoding of results written before sampling existed
# knobs added after results were committed: absent means this value
ADDED_KNOBS = GREEDY | {"batch_size": 1, "model.weight_left_gemm": False}
ADDED_METHOD_KNOBS = {"split_cost": True}  # the same for a single-method run's knobs (`method.<knob>`)


class ResultsDirError(RuntimeError):
    """The results folder cannot hold a result; the message says why."""


def prepare_dir(folder: Path) -> None:
    """Create `folder`, check its name fits and that a file can be written there, and remove stale temp files."""
    folder = Path(folder).absolute()
    for part in folder.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise ResultsDirError(f"results folder name {part[:40]!r}... is {len(os.fsencode(part))} bytes long "
                                  f"(at most {NAME_MAX}); set a shorter results_dir=...")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".tmp-{os.getpid()}-probe.json"
        probe.write_text("{}")
        probe.unlink()
    except OSError as err:
        raise ResultsDirError(f"cannot write to results folder {folder}: {err.strerror or err}") from err
    remove_stale_temp_files(folder)


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete temporary files of killed writes (their writer is gone); return what was removed."""
    stale = []
    for tmp in Path(folder).glob(".tmp-*.json"):
        writer = tmp.name.split("-")[1]
        if not (writer.isdigit() and int(writer) != os.getpid() and psutil.pid_exists(int(writer))):
            tmp.unlink(missing_ok=True)
            stale.append(tmp)
    return stale


def write_atomic(path: Path, payload: dict) -> None:
    """Strict JSON written through a temporary file and a rename, so a killed run never leaves a partial file.

    The file's mode follows the umask; NaN and infinities are written as null.
    """
    text = json.dumps(strict(payload), indent=1, allow_nan=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{os.getpid()}-{secrets.token_hex(4)}.json"
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_fallback(payload: dict) -> Path:
    """Write a result that could not go to its folder into the system temp folder (compact JSON); its path."""
    fd, name = tempfile.mkstemp(prefix="spec_decode-result-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(strict(payload), f, allow_nan=False)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def strict(value):
    """`value` with tensors as lists, paths as strings, and NaN/inf as None (strict JSON); TypeError otherwise."""
    if isinstance(value, dict):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, torch.Tensor):
        return strict(value.tolist())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return strict(value.item())
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def read(path: Path) -> dict | None:
    """A result file's content, or None when it is absent or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_for_script(path: Path, methods, missing: str = "") -> dict:
    """A result file for an analysis script, checked to exist and to hold `methods`; one `error:` line otherwise."""
    result = read(path)
    if result is None:
        raise SystemExit(f"error: no result at {path}{missing}")
    absent = [label for label in methods if label not in result["methods"]]
    if absent:
        raise SystemExit(f"error: {path} has no method {absent[0]!r}; it has {', '.join(result['methods'])}")
    return result


def is_complete(path: Path) -> bool:
    """A result file exists, parses, and was written by a run that finished."""
    run = read(path)
    return isinstance(run, dict) and run.get("complete") is True


def config_changes(stored: dict, requested: dict) -> list[str]:
    """`key: old → new` for every setting (output paths aside) where two resolved configs differ; names (model,
    method, dataset) first, then top-level knobs, then nested ones. A knob added since `stored` was written counts
    as its default there (an older greedy batch-1 result is still this configuration's)."""
    old, new = _flat(stored), _flat(requested)
    old |= {key: value for key, value in ADDED_KNOBS.items() if key not in old and key in new}
    old |= {key: ADDED_METHOD_KNOBS[leaf] for key in new.keys() - old.keys()
            if key.startswith("method.") and (leaf := key.rsplit(".", 1)[-1]) in ADDED_METHOD_KNOBS}
    keys = sorted(old.keys() | new.keys(), key=lambda k: (not k.endswith(".name"), k.count("."), k))
    return [f"{key}: {_show(old, key)} → {_show(new, key)}" for key in keys
            if key.split(".")[0] not in IGNORED_KEYS and old.get(key, _ABSENT) != new.get(key, _ABSENT)]


def _flat(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _show(flat: dict, key: str) -> str:
    return "(absent)" if key not in flat else json.dumps(flat[key])


_ABSENT = object()


def environment(device: torch.device, dtype: str, machine: dict | None = None, git: dict | None = None) -> dict:
    """Versions, hardware, threads, host and git state: how the numbers were obtained; `machine`: cores and load;
    `git`: the state taken when the run started (default: now), since a commit during a long run changes HEAD."""
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
        "git": git or git_state(),
        **({} if machine is None else {"machine": machine}),
    }


def load_results(paths) -> pd.DataFrame:
    """Result files (or folders searched recursively) as one row per method per run."""
    rows = []
    for file in _result_files(paths):
        run = read(file)
        for method in run["summary"]:
            rows.append(_row(run, method, file))
    return pd.DataFrame(rows)


def _row(run: dict, summary: dict, file: Path) -> dict:
    flat = {k: math.nan if v is None else v for k, v in pd.json_normalize(summary, sep=".").iloc[0].items()}
    cfg = run["config"]  # strict JSON stores NaN as null; the frame has NaN again
    return {"file": str(file), "started_at": run.get("started_at"), "experiment": cfg.get("experiment_name"),
            "model": cfg["model"]["name"], "dataset": cfg["dataset"]["name"], "max_new_tokens": cfg["max_new_tokens"],
            "interleave": cfg.get("interleave", False), "batch_size": cfg.get("batch_size", 1),
            "decoder": run["methods"][summary["method"]]["method"],
            "device_name": run["environment"]["device_name"], "dtype": run["environment"]["dtype"],
            **_sampling(run, summary["method"]),
            **{f"param.{k}": v for k, v in run["methods"][summary["method"]]["params"].items()}, **flat}


def _sampling(run: dict, label: str) -> dict:
    """A method's temperature, top_p and top_k: its run record's, else the run config's, else greedy (older files)."""
    recorded = run["methods"][label].get("sampling") or {}
    return {key: type(default)(recorded.get(key, run["config"].get(key, default))) for key, default in GREEDY.items()}


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


def git_state() -> dict:
    """The checkout's HEAD commit and whether tracked files differ from it."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5,
                                 cwd=Path(__file__).parent)
            return out.stdout.strip() if out.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            return None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}
