"""A CPU burner for tests: another process (not a descendant of the test's, so it counts as another tenant) that
spins one core for a few seconds at most, and is killed when the test is done with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil

SPIN = """import sys, time
end = time.monotonic() + float(sys.argv[1])
print('spinning', flush=True)
while time.monotonic() < end:
    pass
"""
# The launcher starts the spinner and exits at once: the spinner is then adopted by init, not by the test process.
LAUNCH = """import subprocess, sys
print(subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]]).pid)
"""


@contextmanager
def burning(limit_s: float = 20.0) -> Iterator[int]:
    """Spin one core in a detached process (it stops by itself after `limit_s`); yields its pid once it spins."""
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCH, SPIN, str(limit_s)], stdout=subprocess.PIPE, text=True)
    pid = None
    try:
        pid = int(launcher.stdout.readline())
        launcher.wait(timeout=30)
        started = launcher.stdout.readline()  # the spinner inherited the pipe; it closes at the latest after limit_s
        assert started.strip() == "spinning", "the CPU burner did not start"
        assert pid not in {p.pid for p in psutil.Process().children(recursive=True)}, "the burner is our descendant"
        yield pid
    finally:
        if pid is not None:
            _kill(pid)
        launcher.kill()
        launcher.wait(timeout=30)
        launcher.stdout.close()


def _kill(pid: int) -> None:
    """SIGKILL the spinner and wait (5 s at most) until it is gone or a zombie that init has yet to reap."""
    try:
        os.kill(pid, signal.SIGKILL)
        spinner = psutil.Process(pid)
        deadline = time.monotonic() + 5
        while spinner.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.01)
    except (ProcessLookupError, psutil.NoSuchProcess):
        pass
