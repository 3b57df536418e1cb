"""Measurements that survive a busy machine: the load probe, the busy mark and warning, strict_quiet, the default
thread count, and interleaved order (the default) with the method order rotated from prompt to prompt."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

import pytest
import torch
from hydra import compose, initialize_config_dir

from spec_decode import bench, decoders, machine
from spec_decode.bench import Protocol, rotated, run_methods
from spec_decode.data import Prompt
from spec_decode.decoders import build_decoder
from spec_decode.models import tiny_pair
from spec_decode.runner import CONF_DIR, _payload, busy_warnings, protocol_from, summary_table
from tests.burner import burning
from tests.conftest import FAST, ROOT, random_prompts, run_cli


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


class BurnWhileTimed:
    """AR whose every generation runs while another process spins a core, and lasts 0.3 s at least (the
    simulated busy interval: this process sleeps, so the other one surely gets a core)."""

    name = "burn"

    def __init__(self, target):
        self.ar = build_decoder("ar", target)

    def params(self) -> dict:
        return {}

    def generate(self, prompt_ids, max_new_tokens, eos_token_id=None, seed=0):
        with burning(limit_s=10):
            out = self.ar.generate(prompt_ids, max_new_tokens, eos_token_id, seed)
            time.sleep(0.3)
        return out


def test_the_load_probe_returns_sane_values():
    cores = machine.cores()
    assert cores["affinity"] and set(cores["affinity"]) <= set(range(os.cpu_count()))
    assert 1 <= cores["usable_cores"] <= len(cores["affinity"])
    state = machine.state()
    assert len(state["load_avg"]) == 3 and all(x >= 0 for x in state["load_avg"])
    assert state["torch_threads"] == torch.get_num_threads()
    probed = machine.probe(machine.counters(), threshold=0.1, seconds=0.3)
    assert 0.3 <= probed["other_cpu_window_s"] < 5
    assert 0 <= probed["other_cpu_cores"] <= len(cores["affinity"]) + probed["other_cpu_resolution"]
    assert 0 < probed["other_cpu_resolution"] < 1 and isinstance(probed["busy"], bool)


def test_this_process_cpu_is_not_counted_as_other():
    start = machine.counters()
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    stop = machine.counters()
    assert stop.own - start.own >= 0.25  # ours, in ticks
    assert stop.busy - start.busy >= stop.own - start.own - 0.05  # busy CPU time includes it


def test_a_burning_process_is_measured_as_other():
    with burning(limit_s=10):
        start = machine.counters()
        time.sleep(0.5)
        measured = machine.load(start, machine.counters())
    assert machine.lower_bound(measured) > 0.5


def test_cgroup_quota_v2_v1_and_none(tmp_path):
    proc = tmp_path / "cgroup"
    (tmp_path / "job" / "step").mkdir(parents=True)
    (tmp_path / "job" / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "job" / "step" / "cpu.max").write_text("max 100000\n")
    proc.write_text("0::/job/step\n")
    assert machine.cgroup_quota(tmp_path, proc) == 1.5  # a parent's quota binds its children
    (tmp_path / "job" / "step" / "cpu.max").write_text("50000 100000\n")
    assert machine.cgroup_quota(tmp_path, proc) == 0.5
    v1 = tmp_path / "v1"
    (v1 / "cpu,cpuacct" / "docker").mkdir(parents=True)
    (v1 / "cpu,cpuacct" / "docker" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu,cpuacct" / "docker" / "cpu.cfs_period_us").write_text("100000\n")
    proc.write_text("5:memory:/docker\n2:cpu,cpuacct:/docker\n")
    assert machine.cgroup_quota(v1, proc) == 3.0
    (v1 / "cpu,cpuacct" / "docker" / "cpu.cfs_quota_us").write_text("-1\n")
    assert machine.cgroup_quota(v1, proc) is None
    assert machine.cgroup_quota(tmp_path / "absent", tmp_path / "absent_cgroup") is None


AFFINITY = """
import json, os, torch
from spec_decode.runner import set_threads
default = torch.get_num_threads()
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
print(json.dumps([default, set_threads(None), torch.get_num_threads(), set_threads(2)["threads"]]))
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two CPUs in the affinity mask")
def test_default_threads_follow_the_affinity_mask():
    proc = subprocess.run([sys.executable, "-c", AFFINITY], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    default, chosen, used, explicit = json.loads(proc.stdout.splitlines()[-1])
    assert default >= 2  # torch counted the machine's cores before the mask shrank
    assert chosen["threads"] == used == 1 and "1 in its CPU affinity mask" in chosen["chosen_by"]
    assert explicit == 2


def test_timed_load_tells_rounding_from_load():
    def sample(cores: float, window: float) -> dict:
        return {"other_cpu_cores": cores, "other_cpu_window_s": window, "other_cpu_resolution": 0.04 / window}

    assert machine.timed_load([{"seconds": 1.0}], 0.1) is None  # a result written before the readings existed
    short_noise = machine.timed_load([sample(0.3, 0.05), sample(0.0, 0.05), sample(0.2, 0.05)], 0.1)
    assert not short_noise["busy"] and short_noise["busy_samples"] == 0
    steady = machine.timed_load([sample(0.5, 0.05)] * 400, 0.1)  # too short each, clear together
    assert steady["busy"] and steady["busy_samples"] == 0 and steady["mean_cores"] == pytest.approx(0.5)
    one_long = machine.timed_load([sample(0.0, 2.0)] * 5 + [sample(0.9, 2.0)], 0.1)
    assert one_long["busy"] and one_long["busy_samples"] == 1 and one_long["max_cores"] == pytest.approx(0.88)
    quiet = machine.timed_load([sample(0.02, 2.0)] * 5, 0.1)
    assert not quiet["busy"]


def test_interleaving_is_the_default():
    assert protocol_from(compose_cfg()).interleave is True
    assert Protocol().interleave is True
    assert protocol_from(compose_cfg("interleave=false")).interleave is False
    for file in (CONF_DIR / "experiment").glob("*.yaml"):
        assert "interleave: true" not in file.read_text(), f"{file.name}: redundant now"


def test_rotation():
    assert [rotated(["a", "b", "c"], i) for i in range(4)] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"],
                                                               ["a", "b", "c"]]
    assert rotated([], 3) == []


def test_method_order_rotates_and_every_method_is_still_compared_with_ar(pair64, monkeypatch):
    order, measure = [], bench.measure

    def recording(m, pair, p, r, *args):
        order.append((p, r, m.name))
        return measure(m, pair, p, r, *args)

    monkeypatch.setattr(bench, "measure", recording)
    methods = {"ar": ("ar", {}), "linear": ("linear", {"k": 3}), "tree": ("tree", {"depth": 3, "branch": 2})}
    prompts = [Prompt("", p) for p in random_prompts(3, seed=12)]
    runs = run_methods(pair64, methods, prompts, Protocol(max_new_tokens=10, warmup=0, repeats=2))
    rounds = [[name for p, r, name in order[i:i + 3]] for i in range(0, len(order), 3)]
    assert rounds == [rotated(["ar", "linear", "tree"], i) for i in range(6)]
    assert {r[0] for r in rounds} == {r[-1] for r in rounds} == {"ar", "linear", "tree"}
    for label in ("linear", "tree"):
        assert [s["exact_match"] for s in runs[label]["samples"]] == [1.0] * 6
        assert all(s["first_divergence"] is None and s["divergence_at_tie"] is None for s in runs[label]["samples"])
    assert [s["exact_match"] for s in runs["ar"]["samples"] if s["repeat"] == 0] == [None] * 3  # the reference
    watched = runs["tree"]["machine"]
    assert [w["prompt"] for w in watched["per_prompt"]] == [0, 1, 2] and watched["shared_by_interleaved_methods"]
    assert all(w["other_cpu_cores"] >= 0 and len(w["load_avg"]) == 3 for w in watched["per_prompt"])
    assert {"before", "after", "other_cpu_cores"} <= watched.keys()


def test_sequential_runs_record_the_machine_before_and_after_each_method(pair):
    prompts = [Prompt("", p) for p in random_prompts(2, seed=13)]
    runs = run_methods(pair, {"ar": ("ar", {}), "linear": ("linear", {"k": 2})}, prompts,
                       Protocol(max_new_tokens=8, warmup=1, repeats=1, interleave=False))
    for run in runs.values():
        watched = run["machine"]
        assert watched["before"]["usable_cores"] >= 1 and len(watched["after"]["load_avg"]) == 3
        assert watched["other_cpu_cores"] >= 0 and watched["other_cpu_window_s"] > 0
        assert "per_prompt" not in watched and all(s["other_cpu_resolution"] > 0 for s in run["samples"])
    assert [s["exact_match"] for s in runs["linear"]["samples"]] == [1.0, 1.0]


def _tiny_payload(runs: dict, prompts: list, interleave: bool = True) -> dict:
    pair = tiny_pair()
    pair = dataclasses.replace(pair, info=pair.info | {"name": "tiny", "dtype": "float32"})
    config = {"dataset": {"name": "builtin"}, "repeats": 1, "max_new_tokens": 24, "interleave": interleave,
              "busy_threshold": 0.1}
    host = machine.choose_threads(1) | {"start": machine.probe(machine.counters(), 0.1, seconds=0)}
    return _payload(config, "now", pair, prompts, runs, host)


def test_a_busy_interval_marks_the_method_and_warns(monkeypatch):
    monkeypatch.setitem(decoders.DECODERS, "burn", BurnWhileTimed)
    pair, prompts = tiny_pair(), [Prompt("", p) for p in random_prompts(2, seed=14)]
    runs = run_methods(pair, {"ar": ("ar", {}), "burn": ("burn", {})}, prompts,
                       Protocol(max_new_tokens=24, warmup=0, repeats=1))
    assert all(machine.lower_bound(s) > 0.5 for s in runs["burn"]["samples"])
    payload = _tiny_payload(runs, prompts)
    burn = payload["summary"][1]["other_cpu"]
    assert burn["busy"] and burn["busy_samples"] == 2 and burn["max_cores"] > 0.5
    assert "burn" in payload["environment"]["machine"]["busy_methods"]
    row = next(line for line in summary_table(payload).splitlines() if line.lstrip().startswith("burn "))
    assert "BUSY" in row
    warnings = busy_warnings(payload)
    assert warnings and all(line.startswith("WARNING: ") for line in warnings)
    assert "burn" in warnings[0] and "may be unreliable" in warnings[0]
    assert "quieter machine" in warnings[1] and "this run used 1 thread of" in warnings[1]


def test_the_advice_names_fewer_threads_only_when_there_are_fewer():
    busy = {"method": "linear", "other_cpu": {"busy": True, "max_cores": 0.9, "threshold_cores": 0.1}}
    payload = {"summary": [busy], "config": {"interleave": False},
               "environment": {"torch_threads": 4, "machine": {"usable_cores": 4}}}
    warnings = busy_warnings(payload)
    assert "threads=1; this run used 4 threads of 4 usable cores" in warnings[1]
    assert "interleave=true" in warnings[2]
    start = {"usable_cores": 4, "other_cpu_cores": 1.0, "other_cpu_window_s": 1.0}
    assert "threads=3 (or threads=1)" in machine.busy_start_message(start, {"threads": 4}, 0.1)
    assert "threads=" not in machine.busy_start_message(start, {"threads": 2}, 0.1).split("slow down")[1]


def test_a_quiet_run_has_no_mark_and_no_warning():
    payload = {"summary": [{"method": "ar", "other_cpu": machine.timed_load(
        [{"other_cpu_cores": 0.01, "other_cpu_window_s": 3.0, "other_cpu_resolution": 0.01}], 0.1)}],
        "environment": {"torch_threads": 2}, "config": {"interleave": True}}
    assert busy_warnings(payload) == []


def test_strict_quiet_stops_when_the_machine_becomes_busy(monkeypatch):
    monkeypatch.setitem(decoders.DECODERS, "burn", BurnWhileTimed)
    pair, prompts = tiny_pair(), [Prompt("", p) for p in random_prompts(2, seed=14)]
    with pytest.raises(machine.MachineBusyError, match="became busy.*burn.*strict_quiet=true stops"):
        run_methods(pair, {"burn": ("burn", {})}, prompts,  # alone: AR might meet the machine's own tenants first
                    Protocol(max_new_tokens=24, warmup=0, repeats=1, strict_quiet=True))


def test_strict_quiet_refuses_to_start_while_another_process_burns_cpu(tmp_path):
    with burning(limit_s=120):
        proc = run_cli(*FAST, "strict_quiet=true", f"results_dir={tmp_path}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "the machine is busy" in errors[0] and "strict_quiet=true refuses" in errors[0]
    assert "warming up" not in proc.stdout + proc.stderr and not (tmp_path / "result.json").exists()


def test_a_run_on_a_busy_machine_says_so_at_the_start_and_in_its_last_lines(tmp_path):
    with burning(limit_s=120):
        proc = run_cli(*FAST, "max_new_tokens=150", "methods=[ar,linear]", f"results_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert "the machine is busy" in proc.stdout.split("warming up")[0]  # said before the measurement
    assert lines[-2].startswith("WARNING: other processes used the CPU while ar, linear were timed")
    assert lines[-1].startswith("WARNING: re-run on a quieter machine")
    rows = [line.split() for line in lines if line.split()[:1] in (["ar"], ["linear"])]
    assert len(rows) == 2 and all(row[-1] == "BUSY" for row in rows)
    stored = json.loads((tmp_path / "result.json").read_text())
    assert stored["environment"]["machine"]["busy_methods"] == ["ar", "linear"]
    assert stored["environment"]["machine"]["start"]["busy"] is True


@pytest.mark.skipif(machine.usable_cores() < 2, reason="needs 2 usable cores to have threads to give up")
def test_threads_null_gives_cores_back_and_measures_the_round_again(monkeypatch):
    """Interleaved, threads=null: a round during which others took a core is dropped and re-measured on fewer
    threads; the dropped samples are kept in the prompt's record, and the run's last lines say so."""
    monkeypatch.setitem(decoders.DECODERS, "burn", BurnWhileTimed)
    pair, prompts = tiny_pair(), [Prompt("", p) for p in random_prompts(2, seed=15)]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runs = run_methods(pair, {"ar": ("ar", {}), "burn": ("burn", {})}, prompts,
                           Protocol(max_new_tokens=16, warmup=0, repeats=1, adapt_threads=True))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    first, second = runs["ar"]["machine"]["per_prompt"]
    assert [(c["from_threads"], c["to_threads"]) for c in first["threads_reduced"]] == [(2, 1)]
    assert sorted(d["method"] for d in first["threads_reduced"][0]["discarded"]) == ["ar", "burn"]
    assert second["threads_reduced"] == []  # already at one thread
    assert all(len(run["samples"]) == 2 for run in runs.values())
    assert runs["burn"]["samples"][0]["exact_match"] == 1.0
    warnings = busy_warnings(_tiny_payload(runs, prompts))
    assert any("torch threads 2 -> 1" in line and "measured again" in line for line in warnings)
