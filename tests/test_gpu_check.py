"""scripts/gpu_check.sh runs end to end (CPU, tiny shapes) and writes every artifact it promises."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_gpu_check_quick_on_cpu(tmp_path):
    env = os.environ | {"PYTHON": sys.executable, "GPU_CHECK_RESULTS": str(tmp_path)}
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--cpu", "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "cpu"
    for name in ["gpu_check.log", "environment.txt", "cuda_tests.xml", "forward_cost_pythia_random.csv",
                 "forward_cost_pythia_random.json", "overhead.csv", "overhead/result.json"]:
        assert (out / name).is_file(), name
    curve = pd.read_csv(out / "forward_cost_pythia_random.csv")
    assert list(curve["tokens"]) == list(range(1, 9)) and (curve[["target_ms", "draft_ms"]] > 0).all().all()
    shares = pd.read_csv(out / "overhead.csv", index_col="method")
    assert list(shares.index) == ["ar", "linear_k4", "tree_d4_b2"]
    assert shares["time_share.overhead"].between(0, 1).all()
    assert "gpu_check done" in (out / "gpu_check.log").read_text()


def test_gpu_check_refuses_unknown_options():
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--fast"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown option --fast")
