"""scripts/retrieval_ceiling.py: the datastore's matches, the replayed positions, the hindsight lengths and replay."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("retrieval_ceiling", ROOT / "scripts" / "retrieval_ceiling.py")
ceiling = importlib.util.module_from_spec(spec)
sys.modules["retrieval_ceiling"] = ceiling
spec.loader.exec_module(ceiling)


def responses(path, answers: list[list[int]]):
    np.savez(path, tokens=np.array([t for a in answers for t in a], dtype=np.int32),
             lengths=np.array([len(a) for a in answers], dtype=np.int32))
    return path


def test_datastore_follows_the_most_frequent_continuation_of_the_longest_match(tmp_path):
    store = ceiling.Datastore([responses(tmp_path / "a.npz", [[1, 2, 3, 4, 6], [1, 2, 3, 5], [8, 2, 3, 5]]),
                               responses(tmp_path / "b.npz", [[1, 2, 3, 4, 6, 7]])])
    assert store.propose([9, 1, 2, 3], 5) == (3, [4, 6, 7])  # 4 twice, 5 once; 6 twice; an ended answer drops out
    assert store.propose([8, 2, 3], 5) == (3, [5])  # an answer's end: no match runs into the next answer
    assert store.propose([42], 5) == (0, [])


def test_context_positions_record_match_length_and_agreement():
    runs = ceiling.accepted_runs([([5, 6, 7], [5, 6, 7, 5])], ceiling.context_source(6), 10)
    assert runs == [[(0, 0), (1, 2), (2, 1), (3, 0)]]  # the last answer token is always the target's own


def test_context_else_store_asks_the_store_only_without_a_context_match(tmp_path):
    store = ceiling.Datastore([responses(tmp_path / "a.npz", [[7, 8, 9]])])
    propose = ceiling.context_else_store(ceiling.context_source(4), store)
    assert propose([1, 7], 3) == (1, [8, 9])  # no earlier 7 in the context: the store's continuation
    assert propose([7, 1, 7], 3) == (1, [1, 7])  # the context's own


def test_hindsight_lengths_and_replay_by_hand():
    runs = [[(1, 2), (0, 0), (0, 0), (1, 0)]]
    lengths = ceiling.hindsight_lengths(runs, lookup=2, base=1.0, per_node=0.25)
    assert lengths == {1: 2, 0: 0}  # match 1: m=0 rate 1, m=1 (1 + 0.5) / 1.25 = 1.2, m=2 (1 + 1) / 1.5 = 1.33
    speedup, per_round = ceiling.replay(runs, lengths, base=1.0, per_node=0.25)
    assert (speedup, per_round) == pytest.approx((4 / 3, 2.0))  # 3 tokens then 1, in 1.5 + 1.5 seconds


def test_main_replays_a_run_and_refuses_a_missing_method(tmp_path, capsys):
    sample = {"prompt": 0, "tokens": [72, 105, 72, 105, 72], "turns": [5], "tree_nodes_per_round": [0, 3, 0],
              "round_times_s": [0.04, 0.055, 0.04]}
    result = {"config": {"model": {"source": "tiny"}}, "prompting": {"chat": False},
              "prompts": [{"text": "Hi", "ids": [72, 105], "category": "writing", "turns": []}],
              "methods": {"ar": {"samples": [sample]}, "retrieval_adaptive": {"samples": [sample]}},
              "summary": [{"method": "retrieval_adaptive", "speedup": 1.1}]}
    path = tmp_path / "result.json"
    path.write_text(json.dumps(result))
    ceiling.main([str(path)])
    out = capsys.readouterr().out
    assert "1 answers" in out and "measured 1.100x AR" in out and "context" in out
    with pytest.raises(SystemExit, match="has no method 'tree'"):
        ceiling.main([str(path), "--method", "tree"])
