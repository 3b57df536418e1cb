"""scripts/speedup_bound.py: a run's costs, in AR steps, and the acceptance each speedup needs."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from spec_decode import costmodel
from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("speedup_bound", ROOT / "scripts" / "speedup_bound.py")
bound = importlib.util.module_from_spec(spec)
sys.modules["speedup_bound"] = bound
spec.loader.exec_module(bound)


def sample(rounds_s, nodes=(), draft_s=(), draft_forwards=0, accepted=0, drafted=0) -> dict:
    return {"round_times_s": list(rounds_s), "tree_nodes_per_round": list(nodes),
            "draft_forward_s_per_round": list(draft_s), "draft_forwards": draft_forwards, "accepted": accepted,
            "drafted": drafted}


@pytest.fixture
def result_file(tmp_path):
    """AR steps of 40 ms, nodes of 10 ms, draft forwards of 4 ms; Linear accepted 3 of 6 drafted tokens."""
    result = {"methods": {
        "ar": {"samples": [sample([0.04, 0.04, 0.04])]},
        "retrieval_adaptive": {"samples": [sample([0.04, 0.06, 0.08], nodes=[0, 2, 4])]},
        "linear_k2": {"samples": [sample([0.1, 0.1, 0.1], draft_s=[0.008, 0.008, 0.008], draft_forwards=6,
                                         accepted=3, drafted=6)]},
    }}
    path = tmp_path / "result.json"
    path.write_text(json.dumps(result))
    return path


def test_main_prices_nodes_and_draft_forwards_in_ar_steps(result_file, monkeypatch, capsys):
    monkeypatch.setattr(bound, "spec_bench_agreement", lambda: 0.4)
    bound.main([str(result_file), "--speedups", "1.5"])
    out = capsys.readouterr().out
    assert "an AR step 40.0 ms" in out and "0.250 AR steps" in out and "a draft forward 4.00 ms = 0.100 AR" in out
    assert "accepted 0.500 of its drafted tokens" in out and "agreement on the Spec-Bench answers: 0.400" in out
    k, speedup = costmodel.best_chain(0.5, 0.25, 0.1)
    assert f"0.500 (measured)  k={k:2d} {speedup:.3f}x" in out
    need = costmodel.acceptance_needed(1.5, 0.25, 0.1)
    assert f"1.50x AR needs a per-token acceptance of {need:.3f} with the draft" in out


def test_main_refuses_a_missing_method(result_file):
    with pytest.raises(SystemExit, match="has no method 'tree'"):
        bound.main([str(result_file), "--draft-method", "tree"])
