"""The per-round cost model (fitted from traces, and online from round times) and the automatic tree budget."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pandas as pd
import pytest

from spec_decode import costmodel
from spec_decode.bench import Protocol, run_method
from spec_decode.data import Prompt
from spec_decode.decoders import build_decoder
from tests.conftest import ROOT, random_prompts


def traced_samples(pair, **params) -> list[dict]:
    decoder = build_decoder("tree", pair.target, pair.draft, fallback=False, **params)  # as calibrate_budget's probe
    decoder.profile, decoder.trace_rounds = True, 10**6
    return [decoder.generate(p, 60).stats.to_dict() for p in random_prompts(3, seed=31)]


def test_fit_recovers_known_costs():
    gen = np.random.default_rng(0)
    sample = {"trace": [], "round_times_s": [], "target_forward_s_per_round": [], "draft_forward_s_per_round": []}
    for _ in range(50):
        trace = {"depth": [0, *sorted(gen.integers(1, 8, size=int(gen.integers(1, 60))).tolist())]}
        forwards, fed, nodes = costmodel.round_features(trace)
        draft, verify, other = 0.002 * forwards + 1e-4 * fed, 0.01 + 3e-4 * nodes, 5e-4 + 1e-5 * nodes
        sample["trace"].append(trace)
        sample["draft_forward_s_per_round"].append(draft)
        sample["target_forward_s_per_round"].append(verify)
        sample["round_times_s"].append(draft + verify + other)
    model = costmodel.fit([sample])
    np.testing.assert_allclose(model.draft, [0.002, 1e-4], rtol=1e-6)
    np.testing.assert_allclose(model.verify, [0.01, 3e-4], rtol=1e-6)
    np.testing.assert_allclose(model.other, [5e-4, 1e-5], rtol=1e-6, atol=1e-9)


def test_truncation_of_real_traces_is_consistent(pair):
    samples = traced_samples(pair, depth=5, branch=3, threshold=0.0, max_nodes=40)
    traces = [t for s in samples for t in s["trace"]]
    # a last round with one token left is a plain target step, untraced: zip stops before it
    rounds = [(t, e) for s in samples for t, e in zip(s["trace"], s["emitted_per_round"], strict=False)]
    for trace, emitted in rounds:
        full = costmodel.truncated_round(trace, depth=5, max_nodes=40)
        assert full[2] == len(trace["token"]) - 1
        assert full[3] == len(trace["accepted"]) - 1 == emitted - 1
        smaller = costmodel.truncated_round(trace, depth=2, max_nodes=4)
        assert smaller[2] <= 4 and smaller[3] <= min(full[3], 2)
    model = costmodel.fit(samples)
    choice = costmodel.choose_budget(model, traces, range(1, 6), (1, 4, 16, 40))
    assert 1 <= choice["depth"] <= 5 and choice["max_nodes"] in (1, 4, 16, 40) and choice["tokens_per_s"] > 0


def test_the_fallback_aware_rate_prices_each_prompt_at_the_cheaper_of_its_tree_rounds_and_ar_steps():
    model = costmodel.CostModel(draft=np.array([0.01, 0.0]), verify=np.array([0.05, 0.01]), other=np.zeros(2))
    chain = {"depth": [0, 1, 2], "parent": [0, 0, 1], "prob": [1.0, 0.9, 0.9]}  # 2 draft forwards, 2 nodes: 0.09 s
    paying = [chain | {"accepted": [0, 1, 2]}] * 10  # 30 tokens: 0.9 s as trees, 1.5 s as AR steps (0.05 s each)
    failing = [chain | {"accepted": [0]}] * 10  # 10 tokens: 0.9 s as trees, 0.5 s as AR steps
    assert costmodel.rate_with_fallback(model, [paying, failing], depth=2, max_nodes=2) == pytest.approx(40 / 1.4)
    assert costmodel.choose_budget(model, paying + failing, [2], [2])["tokens_per_s"] == pytest.approx(40 / 1.8)


def test_auto_budget_calibrates_then_measures(pair):
    prompts = [Prompt("", p) for p in random_prompts(3, seed=32)]
    params = {"depth": 6, "branch": 2, "threshold": 0.02, "max_nodes": 32, "budget": "auto"}
    run = run_method(pair, "tree", params, prompts, Protocol(max_new_tokens=40, warmup=1, repeats=1))
    choice = run["calibration"]["choice"]
    assert run["params"]["depth"] == choice["depth"] <= 6 and run["params"]["max_nodes"] == choice["max_nodes"] <= 32
    assert np.isfinite(run["calibration"]["prediction_error"])


def online_rounds(cost, forwards_choices, seed: int = 0, rounds: int = 40, noise: float = 0.0) -> None:
    """Feed `cost` rounds whose seconds are 0.05 + 0.01 per draft forward + 0.003 per node (+ noise)."""
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        forwards, nodes = int(rng.choice(forwards_choices)), int(rng.integers(0, 13))
        cost.observe(forwards, nodes, seconds=0.05 + 0.01 * forwards + 0.003 * nodes + noise * rng.standard_normal(),
                     tokens=2)


def test_online_cost_recovers_the_round_cost_once_both_features_varied():
    cost = costmodel.OnlineCost(min_rounds=8)
    assert cost.coefficients() is None
    online_rounds(cost, [0, 1, 2, 3], rounds=7)
    assert cost.coefficients() is None  # fewer than min_rounds
    online_rounds(cost, [0, 1, 2, 3], seed=1, noise=1e-4)
    assert np.allclose(cost.coefficients(), [0.05, 0.01, 0.003], atol=1e-3)
    assert cost.seconds_per_token() == pytest.approx((0.05 + 0.01 * 1.5 + 0.003 * 6) / 2, rel=0.3)
    cost.reset()
    assert cost.rounds == 0 and cost.coefficients() is None


def test_online_cost_gives_no_answer_while_a_feature_never_varied():
    cost = costmodel.OnlineCost()
    online_rounds(cost, [3])  # the draft always ran 3 forwards: its cost cannot be told from the base
    assert cost.rounds == 40 and cost.coefficients() is None


def test_bench_ratios_reports_the_worst_prediction_error_with_its_sign():
    spec = importlib.util.spec_from_file_location("bench_ratios", ROOT / "scripts" / "bench_ratios.py")
    bench_ratios = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_ratios)
    assert bench_ratios.worst_error(pd.Series([0.05, -0.178, None, 0.1])) == -0.178
    assert bench_ratios.worst_error(pd.Series([0.02, 0.12])) == 0.12
    assert math.isnan(bench_ratios.worst_error(pd.Series([None], dtype=float)))


def test_verify_fit_recovers_a_linear_cost():
    samples = [{"tree_nodes_per_round": [0, 2, 4], "round_times_s": [0.04, 0.05, 0.06]}]
    assert costmodel.verify_fit(samples) == pytest.approx((0.04, 0.005))


def test_chain_speedup_is_expected_tokens_over_round_cost():
    assert costmodel.chain_speedup(0.5, 2, per_node=0.25, draft=0.0) == pytest.approx(1.75 / 1.5)  # 1 + .5 + .25
    assert costmodel.chain_speedup(1.0, 3, per_node=0.0, draft=0.0) == 4
    assert costmodel.chain_speedup(0.0, 3, per_node=0.1, draft=0.1) == pytest.approx(1 / 1.6)
    assert costmodel.best_chain(0.0, per_node=0.1, draft=0.1) == (0, 1.0)  # nothing accepted: AR steps


def test_acceptance_needed_is_where_the_best_chain_reaches_the_speedup():
    alpha = costmodel.acceptance_needed(2.0, per_node=0.17, draft=0.1)
    assert costmodel.best_chain(alpha, 0.17, 0.1)[1] >= 2.0 > costmodel.best_chain(alpha - 1e-3, 0.17, 0.1)[1]
    assert costmodel.acceptance_needed(1.0, per_node=0.17, draft=0.1) == pytest.approx(0.0, abs=1e-4)
    assert costmodel.acceptance_needed(10.0, per_node=0.17, draft=0.1) is None  # past even a perfect draft's reach
