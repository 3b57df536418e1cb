"""Sweeps through `run.py -m` on the tiny pair: failures recorded and listed, killed sweeps leave no workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil

from spec_decode import sweep
from spec_decode.results import RESULT_FILE, load_results
from tests.conftest import ROOT, run_cli

# smaller than tests.conftest.FAST: one prompt, no warm-up (sweeps run many configurations)
FAST = ["model=tiny", "dataset=builtin", "threads=1", "num_prompts=1", "repeats=1", "warmup=0", "max_new_tokens=8"]


def test_a_failing_grid_point_is_recorded_and_the_sweep_goes_on(tmp_path):
    proc = run_cli("-m", *FAST, "method=tree", "depth=2,0,3", f"results_dir={tmp_path}/depth" + "${depth}",
                   f"hydra.sweep.dir={tmp_path}/hydra")
    assert proc.returncode != 0
    assert (tmp_path / "depth2" / RESULT_FILE).is_file() and (tmp_path / "depth3" / RESULT_FILE).is_file()
    error = json.loads((tmp_path / "depth0" / "error.json").read_text())
    assert "depth must be" in error["error"] and error["config"]["depth"] == 0 and error["complete"] is False
    assert not (tmp_path / "depth0" / RESULT_FILE).exists()
    failed = proc.stderr[proc.stderr.index("error: 1 configuration"):]
    assert "depth=0" in failed and "depth=2" not in failed and "depth=3" not in failed
    assert set(load_results(tmp_path)["param.depth"].dropna()) == {2, 3}


def test_one_folder_for_a_whole_grid_is_not_silently_reused(tmp_path):
    proc = run_cli("-m", *FAST, "method=tree", "depth=2,3", "branch=2", f"results_dir={tmp_path}/fixed",
                   f"hydra.sweep.dir={tmp_path}/hydra")
    assert proc.returncode != 0
    assert "depth: 2 → 3" in proc.stderr and "overwrite=true" in proc.stderr
    assert json.loads((tmp_path / "fixed" / RESULT_FILE).read_text())["config"]["depth"] == 2


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def running(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_workers_of_a_killed_joblib_sweep_stop_within_a_minute(tmp_path):
    long_jobs = ["model=tiny", "dataset=builtin", "threads=1", "num_prompts=1", "repeats=1", "warmup=100000",
                 "max_new_tokens=32", "method=linear", "k=2,3"]
    parent = subprocess.Popen([sys.executable, "run.py", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                               *long_jobs, f"results_dir={tmp_path}/" + "${k}", f"hydra.sweep.dir={tmp_path}/hydra"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    workers: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while len(list((tmp_path / "hydra").glob("*/.hydra"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        workers = descendants(parent.pid)
        assert len(list((tmp_path / "hydra").glob("*/.hydra"))) == 2 and len(workers) >= 2, "jobs did not start"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 60
        while running(workers) and time.monotonic() < deadline:
            time.sleep(1)
        assert running(workers) == []
    finally:
        for p in running(workers):
            p.kill()
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)


def test_the_watchdog_knows_a_gone_launcher_and_ignores_other_machines(monkeypatch):
    me = psutil.Process()
    assert sweep.launcher_alive(me.pid, me.create_time())
    assert not sweep.launcher_alive(me.pid, me.create_time() - 100)  # the pid now belongs to another process
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert not sweep.launcher_alive(gone.pid, 0.0)
    monkeypatch.setenv(sweep.LAUNCHER, f"some-cluster-login-node:{gone.pid}:0.0")  # e.g. a Slurm job's launcher
    sweep.watch_launcher()
    assert not sweep._watching.is_set()
