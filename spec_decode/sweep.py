"""Sweeps that survive their failures: a failed configuration is noted and the sweep goes on; orphaned workers exit.

The launching process (run.py's `__main__`) passes two things to every job, also to joblib's worker processes,
through the environment: a folder where a failed job leaves a note, and its own identity, which a worker
watches so that it exits once the launcher is gone.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
import traceback
from pathlib import Path

import psutil

NOTES = "SPEC_DECODE_SWEEP_NOTES"
LAUNCHER = "SPEC_DECODE_LAUNCHER"  # "host:pid:create_time" of the launching process
WATCH_INTERVAL_S = 2.0
_watching = threading.Event()


def start() -> None:
    """In the launching process: where failed jobs leave notes (made by the first one) and this process's
    identity, both for the jobs to inherit."""
    os.environ[NOTES] = str(Path(tempfile.gettempdir()) / f"spec_decode-sweep-{os.getpid()}-{secrets.token_hex(4)}")
    os.environ[LAUNCHER] = f"{socket.gethostname()}:{os.getpid()}:{psutil.Process().create_time()}"


def finish() -> list[dict]:
    """In the launching process, after the last job: the notes of failed configurations (the folder is removed)."""
    folder = os.environ.get(NOTES)
    if not folder or not Path(folder).is_dir():
        return []
    notes = [json.loads(f.read_text()) for f in sorted(Path(folder).glob("*.json"), key=lambda f: int(f.stem))]
    shutil.rmtree(folder, ignore_errors=True)
    return notes


def note_failure(job: int, overrides: str, err: BaseException, config: dict | None, where: list[Path],
                 expected: bool) -> Path | None:
    """Record a failed configuration: error.json in the first writable of `where`, and a note for the launcher.

    An unexpected error keeps its traceback in error.json.
    """
    from spec_decode import results

    record = {"complete": False, "failed": True, "error": str(err), "error_type": type(err).__name__,
              "overrides": overrides, "config": config}
    if not expected:
        record["traceback"] = "".join(traceback.format_exception(err))
    saved = None
    for folder in where:
        try:
            results.write_atomic(folder / "error.json", record)
            saved = folder / "error.json"
            break
        except OSError:
            continue
    if os.environ.get(NOTES):
        note = {"job": job, "overrides": overrides, "error": str(err), "file": str(saved) if saved else None}
        Path(os.environ[NOTES]).mkdir(parents=True, exist_ok=True)
        (Path(os.environ[NOTES]) / f"{job}.json").write_text(json.dumps(note))
    return saved


def watch_launcher() -> None:
    """In a worker process on the launcher's machine (not the launcher, not a cluster node): exit as soon as the
    launching process is gone."""
    identity = os.environ.get(LAUNCHER)
    if not identity or _watching.is_set():
        return
    host, pid, created = identity.rsplit(":", 2)
    if host != socket.gethostname() or int(pid) == os.getpid():
        return
    _watching.set()
    threading.Thread(target=_watch, args=(int(pid), float(created)), daemon=True, name="launcher-watch").start()


def launcher_alive(pid: int, created: float) -> bool:
    """The process `pid` still runs and is the one that started at `created` (not a reused pid)."""
    try:
        process = psutil.Process(pid)
        return abs(process.create_time() - created) < 1e-2 and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _watch(pid: int, created: float) -> None:
    while launcher_alive(pid, created):
        time.sleep(WATCH_INTERVAL_S)
    os._exit(1)
