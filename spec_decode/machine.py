"""The machine's state around a measurement: the cores this process may use, and the CPU other processes take.

Other processes' CPU over an interval = busy time of the CPUs in this process's affinity mask (psutil's per-CPU
user+nice+system+irq+softirq+steal) minus the CPU time of this process and its children, over the wall time, in
cores. The kernel counts both in clock ticks (10 ms), so one interval's estimate is good to about
(CPUs + 2) ticks / its length: its `resolution`. A timed region counts as busy only when the estimate minus its
resolution exceeds the threshold, so a short quiet region is never flagged by rounding alone.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
CLOCK_TICK_S = 1 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
START_PROBE_S = 1.0  # the probe before the models load
BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq", "steal")  # guest time is already inside user and nice


class MachineBusyError(RuntimeError):
    """strict_quiet=true and other processes use the CPU; the message says how much."""


@dataclass(frozen=True)
class Counters:
    """Cumulative CPU seconds at one instant: busy on the measured CPUs, and used by this process and its children."""

    wall: float
    busy: float
    own: float
    cpus: int


def affinity() -> list[int]:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def cgroup_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """Cores the cgroup CPU quota allows (the tightest on the process's cgroup path); None if unlimited or unreadable.

    cgroup v2 `cpu.max` ("max 100000" or "150000 100000"), v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us` (-1 = none).
    """
    quotas = [q for folder in _cgroup_folders(root, proc_cgroup) if (q := _quota(folder)) is not None]
    return min(quotas, default=None)


def _cgroup_folders(root: Path, proc_cgroup: Path) -> list[Path]:
    """The cpu controller's folders of this process, its own first, then each parent up to the mount."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    folders = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers and "cpu" not in controllers.split(","):
            continue
        mount = root / controllers if controllers else root  # v1: cpu or cpu,cpuacct; v2: the unified root
        folder = mount / path.lstrip("/")
        folders += [folder, *[p for p in folder.parents if p.is_relative_to(mount)]]
    return list(dict.fromkeys(folders + [root, root / "cpu", root / "cpu,cpuacct"]))


def _quota(folder: Path) -> float | None:
    try:
        if (folder / "cpu.max").is_file():
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        if (folder / "cpu.cfs_quota_us").is_file():
            quota = int((folder / "cpu.cfs_quota_us").read_text())
            return None if quota <= 0 else quota / int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError, ZeroDivisionError):
        return None
    return None


def usable_cores() -> int:
    """Whole cores this process can use: its affinity mask, capped by the cgroup quota (floor), at least 1."""
    quota = cgroup_quota()
    return max(1, math.floor(min(len(affinity()), quota if quota is not None else math.inf)))


def choose_threads(requested: int | None) -> dict:
    """torch's intra-op thread count: `requested`, or the usable cores (not the machine's core count); and why."""
    if requested is not None:
        return {"threads": requested, "chosen_by": "threads= in the config"}
    quota = cgroup_quota()
    return {"threads": usable_cores(),
            "chosen_by": f"threads=null: the cores available to the process ({len(affinity())} in its CPU affinity "
                         f"mask, cgroup CPU quota {'none' if quota is None else f'{quota:g} cores'})"}


def cores() -> dict:
    """What the process may use: affinity mask, cgroup quota, usable cores, the machine's CPU count."""
    return {"affinity": affinity(), "cgroup_quota_cores": cgroup_quota(), "usable_cores": usable_cores(),
            "cpu_count": os.cpu_count()}


def counters() -> Counters:
    """Read the CPU counters now (a few microseconds; call outside timed regions)."""
    per_cpu = psutil.cpu_times(percpu=True)
    ids = affinity()
    measured = [per_cpu[i] for i in ids] if ids and max(ids) < len(per_cpu) else per_cpu
    busy = sum(getattr(t, name, 0.0) for t in measured for name in BUSY_FIELDS)
    return Counters(time.monotonic(), busy, _own_cpu_seconds(), len(measured))


def _own_cpu_seconds() -> float:
    """CPU seconds of this process, its finished children and its live descendants."""
    me = psutil.Process()
    total = _cpu_seconds(me)
    for child in me.children(recursive=True):
        try:
            total += _cpu_seconds(child)
        except psutil.Error:  # it ended meanwhile
            pass
    return total


def _cpu_seconds(process: psutil.Process) -> float:
    t = process.cpu_times()
    return t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)


def load(start: Counters, end: Counters) -> dict:
    """Other processes' CPU between two readings, in cores, with the window's length and its resolution in cores."""
    window = max(end.wall - start.wall, 1e-9)
    other = max(0.0, (end.busy - start.busy) - (end.own - start.own)) / window
    return {"other_cpu_cores": other, "other_cpu_window_s": window,
            "other_cpu_resolution": (end.cpus + 2) * CLOCK_TICK_S / window}


def state() -> dict:
    """Load average (1, 5, 15 min), usable cores and torch's thread count now."""
    return {"load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "usable_cores": usable_cores(), "torch_threads": torch.get_num_threads()}


def probe(start: Counters, threshold: float, seconds: float = START_PROBE_S) -> dict:
    """Finish a probe begun at `start`, waiting until it spans `seconds`: the state, other processes' CPU, busy."""
    time.sleep(max(0.0, seconds - (time.monotonic() - start.wall)))
    measured = load(start, counters())
    return state() | measured | {"busy": lower_bound(measured) > threshold}


def lower_bound(measured: dict) -> float:
    """The least other-process CPU (cores) the interval surely had: the estimate minus its resolution, >= 0."""
    return max(0.0, measured["other_cpu_cores"] - measured["other_cpu_resolution"])


def timed_load(samples: list[dict], threshold: float) -> dict | None:
    """Other processes' CPU during a method's timed regions; None for samples without the readings (old results).

    mean_cores: time-weighted over all regions; resolution_cores: of that mean (independent rounding errors add in
    quadrature); max_cores: the surest lower bound, the busiest single region's or the mean's; busy: it exceeds
    `threshold`.
    """
    measured = [s for s in samples if s.get("other_cpu_cores") is not None]
    if not measured:
        return None
    window = sum(s["other_cpu_window_s"] for s in measured)
    mean = sum(s["other_cpu_cores"] * s["other_cpu_window_s"] for s in measured) / window
    resolution = math.sqrt(sum((s["other_cpu_resolution"] * s["other_cpu_window_s"]) ** 2 for s in measured)) / window
    busiest = max([lower_bound(s) for s in measured] + [max(0.0, mean - resolution)])
    return {"mean_cores": mean, "resolution_cores": resolution, "max_cores": busiest,
            "busy_samples": sum(lower_bound(s) > threshold for s in measured), "busy": busiest > threshold,
            "threshold_cores": threshold}


def busy_start_message(start: dict, threads: dict, threshold: float) -> str:
    """What the start probe found on a busy machine, and the thread count that would not contend with it."""
    fewer = max(1, start["usable_cores"] - math.ceil(start["other_cpu_cores"] - threshold))
    advice = "measure on a quieter machine"
    if threads["threads"] > fewer:
        advice = f"re-run with threads={fewer}{'' if fewer == 1 else ' (or threads=1)'}, or on a quieter machine"
    return (f"the machine is busy: other processes used {start['other_cpu_cores']:.2f} cores over the last "
            f"{start['other_cpu_window_s']:.1f} s (busy_threshold={threshold:g}), and torch runs "
            f"{threads['threads']} threads on {start['usable_cores']} usable cores; threads that share cores with "
            f"other processes slow down badly and timings drift: {advice}")
