"""Batched greedy decoding: every row equals batch-1 greedy AR on its prompt; rows leave when done; bad input."""

from __future__ import annotations

import json

import pytest

from spec_decode.bench import Protocol, run_methods
from spec_decode.data import Prompt
from spec_decode.decoders import build_decoder
from spec_decode.decoders.batched import BATCHED, build_batched, check_batched
from spec_decode.metrics import summarize
from spec_decode.results import RESULT_FILE
from tests.conftest import FAST, random_prompts, run_cli

METHODS = [
    ("ar", {}),
    ("linear", {"k": 1}),
    ("linear", {"k": 4}),
    ("tree", {"depth": 4, "branch": 2}),
    ("tree", {"depth": 5, "branch": 3, "threshold": 0.05, "max_nodes": 12}),
    ("tree", {"depth": 3, "branch": 1}),
    ("tree", {"depth": 6, "branch": 2, "threshold": 1.0}),  # every child pruned: rounds of one token
    ("tree", {"depth": 4, "branch": 2, "threshold": 0.05, "max_nodes": 10, "lookup": 6}),
    ("tree", {"depth": 2, "branch": 2, "max_nodes": 3, "lookup": 8, "ngram": 1, "lookup_branches": 3}),
    ("tree", {"depth": 6, "branch": 2, "threshold": 0.3, "max_nodes": 8, "lookup": 5, "lookup_first": True}),
]


def ar_tokens(pair, prompts, max_new_tokens, eos=None):
    ar = build_decoder("ar", pair.target)
    return [ar.generate(p, max_new_tokens, eos).tokens for p in prompts]


@pytest.fixture(scope="module")
def prompts():
    """Prompts of 1 to 40 tokens (different lengths in every batch), and their batch-1 AR references per pair."""
    return random_prompts(8, seed=11)


@pytest.mark.parametrize(("method", "params"), METHODS, ids=str)
def test_every_row_matches_batch_1_ar(pair64, prompts, method, params):
    expected = ar_tokens(pair64, prompts, 40)
    decoder = build_batched(method, pair64.target, pair64.draft, **params)
    for size in (1, 2, 3, 8):
        out = decoder.generate_batch(prompts[:size], 40)
        assert out.tokens == expected[:size], f"batch {size}"
        assert len(out.row_seconds) == size and all(s > 0 for s in out.row_seconds)


@pytest.mark.parametrize(("method", "params"), [METHODS[0], METHODS[2], METHODS[3], METHODS[-1]], ids=str)
def test_rows_stop_at_eos_in_different_rounds_and_leave(pair64, prompts, method, params):
    plain = ar_tokens(pair64, prompts, 40)
    eos = plain[0][9]  # a token row 0 emits; other rows emit it elsewhere, or never
    expected = ar_tokens(pair64, prompts, 40, eos)
    lengths = {len(t) for t in expected}
    assert len(lengths) > 1, "the EOS must end rows at different points for this test to mean anything"
    out = build_batched(method, pair64.target, pair64.draft, **params).generate_batch(prompts, 40, eos)
    assert out.tokens == expected
    rows = out.stats.rows_per_round
    assert rows == sorted(rows, reverse=True) and rows[-1] < len(prompts)  # finished rows left the batch
    assert sum(out.stats.emitted_per_round) == sum(len(t) for t in expected) - len(prompts)  # prefill's first tokens


@pytest.mark.parametrize("max_new_tokens", [1, 2, 3])
@pytest.mark.parametrize(("method", "params"), [METHODS[2], METHODS[4]], ids=str)
def test_fewer_new_tokens_than_a_round(pair64, prompts, method, params, max_new_tokens):
    out = build_batched(method, pair64.target, pair64.draft, **params).generate_batch(prompts[:3], max_new_tokens)
    assert out.tokens == ar_tokens(pair64, prompts[:3], max_new_tokens)


@pytest.mark.parametrize(("method", "params"), METHODS[1:5], ids=str)
def test_float32_rows_match(pair, method, params):
    """float32: batched GEMMs may round differently from batch 1; on the tiny pair no margin is that thin."""
    prompts = random_prompts(4, seed=5)
    out = build_batched(method, pair.target, pair.draft, **params).generate_batch(prompts, 24)
    assert out.tokens == ar_tokens(pair, prompts, 24)


def test_a_batched_tree_verifies_every_row_in_one_target_forward(pair64, prompts):
    decoder = build_batched("tree", pair64.target, pair64.draft, depth=4, branch=2)
    calls = []
    hook = pair64.target.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape),
                                                   with_kwargs=True)
    try:
        out = decoder.generate_batch(prompts[:3], 16)
    finally:
        hook.remove()
    assert len(calls) == out.stats.target_forwards == out.stats.rounds + 1  # the prefill, then one per round
    assert {shape[0] for shape in calls[1:]} <= {1, 2, 3}


def test_method_checks_name_the_supported_ones():
    with pytest.raises(ValueError, match="hf_assisted.*batched methods: ar, linear, tree"):
        check_batched("hf_assisted", "hf_assisted", {})
    with pytest.raises(ValueError, match="recycle=8 runs at batch_size=1 only"):
        check_batched("tree_multi", "tree", {"lookup": 6, "recycle": 8})
    with pytest.raises(ValueError, match="confidence"):
        check_batched("linear", "linear", {"k": 2, "confidence": 0.4})
    check_batched("tree", "tree", {"depth": 3, "branch": 2, "fallback": True, "budget": "fixed", "lookup": 0})
    assert set(BATCHED) == {"ar", "linear", "tree"}


def test_bad_batches_raise(pair64):
    decoder = build_batched("linear", pair64.target, pair64.draft, k=2)
    with pytest.raises(ValueError, match="at least one token"):
        decoder.generate_batch([[1, 2], []], 4)
    decoder.sampling = type(decoder.sampling)(temperature=1.0)
    with pytest.raises(ValueError, match="greedy only"):
        decoder.generate_batch([[1, 2]], 4)


def test_benchmark_times_batches_and_compares_rows_with_batch_1_ar(pair64):
    texts = random_prompts(4, seed=3, lengths=(3, 12))
    prompts = [Prompt(f"p{i}", ids) for i, ids in enumerate(texts)]
    protocol = Protocol(max_new_tokens=10, warmup=1, repeats=2, batch_size=2, profile=True)
    methods = {"ar": ("ar", {}), "linear": ("linear", {"k": 3, "fallback": True}),
               "tree": ("tree", {"depth": 3, "branch": 2, "lookup": 0})}
    runs = run_methods(pair64, methods, prompts, protocol)
    expected = ar_tokens(pair64, texts, 10, pair64.eos_token_id)
    for label, run in runs.items():
        assert len(run["samples"]) == 4  # 2 batches x 2 repeats
        for sample in run["samples"]:
            assert sample["tokens"] == [expected[p] for p in sample["prompts"]] == [expected[r["prompt"]]
                                                                                   for r in sample["rows"]]
            assert sample["exact_match"] == 1.0
            assert sample["new_tokens"] == sum(len(expected[p]) for p in sample["prompts"])
        summary = summarize(run, runs["ar"])
        assert summary["batch"]["rows_exact"] == summary["batch"]["rows_compared"] == 8, label
        assert summary["batch"]["row_latency_s"]["mean"] > 0
        assert summary["time_share"]["overhead"] < 1
    assert summarize(runs["ar"])["tokens_per_round"] == pytest.approx(1.0)  # per row, not summed over the batch
    assert runs["linear"]["params"] == {"k": 3, "fallback": False}  # what ran: no AR fallback at batch > 1


def test_a_batched_run_records_its_batching_and_transformers_refusal(tmp_path):
    proc = run_cli(*FAST, "num_prompts=3", "batch_size=2", "methods=[ar,linear,tree]", f"results_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / RESULT_FILE).read_text())
    assert result["batching"]["batch_size"] == 2 and result["batching"]["prompts_left_out"] == 1
    assert "batch_size = 1" in result["batching"]["not_batched"]["hf_assisted"]  # transformers' own words
    assert len(result["prompts"]) == 2
    for summary in result["summary"]:
        assert summary["batch"]["rows_exact"] == summary["batch"]["rows_compared"] == 2
    assert "in batches of 2" in proc.stdout and "rows=AR@1" in proc.stdout


def test_lookup_chains_in_a_batch_are_accepted_and_exact(pair64):
    """Prompts that repeat themselves: each row's n-gram chains are verified with its tree and often accepted."""
    prompts = [[5, 6, 7, 8, 9] * 4, [40, 41, 42] * 7 + [40], [100, 7, 100, 8, 100, 7, 100], [3]]
    decoder = build_batched("tree", pair64.target, pair64.draft, depth=3, branch=2, lookup=8, ngram=2,
                            lookup_first=True)
    out = decoder.generate_batch(prompts, 30)
    assert out.tokens == ar_tokens(pair64, prompts, 30)
    assert sum(out.stats.emitted_per_round) / sum(out.stats.rows_per_round) > 1.5
