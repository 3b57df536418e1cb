"""Exactness that tells ties from bugs: first divergence, AR's top-2 margin there, and the loud flag."""

from __future__ import annotations

import pytest
import torch

from spec_decode import decoders
from spec_decode.bench import Protocol, Reference, compare, first_divergence, run_methods, top2_logits
from spec_decode.data import Prompt
from spec_decode.decoders import Generation, build_decoder
from spec_decode.metrics import summarize, tie_epsilon
from spec_decode.models import tiny_pair
from spec_decode.runner import summary_table
from tests.conftest import random_prompts

ENV = {"device_name": "cpu", "torch_threads": 1}


def printed(summary: list[dict], dtype: str) -> str:
    """The run's printed summary for these method summaries (a minimal payload around them)."""
    payload = {"summary": summary, "model": {"name": "tiny", "dtype": dtype}, "environment": ENV, "prompts": [],
               "config": {"dataset": {"name": "builtin"}, "repeats": 1, "max_new_tokens": 12}}
    return summary_table(payload)


class FlipAt:
    """A planted divergence: AR's tokens with the token at `index` replaced by `token`."""

    name = "flip"

    def __init__(self, target, index: int = 3, token: int | None = None):
        self.ar = build_decoder("ar", target)
        self.index, self.token = index, token

    def params(self) -> dict:
        return {"index": self.index}

    def generate(self, prompt_ids, max_new_tokens, eos_token_id=None, seed=0) -> Generation:
        out = self.ar.generate(prompt_ids, max_new_tokens, eos_token_id, seed)
        tokens = list(out.tokens)
        tokens[self.index] = (tokens[self.index] + 1) % 256 if self.token is None else self.token
        return Generation(tokens, out.stats)


def tied_pair(index: int, prompt: list[int]):
    """A float32 tiny pair whose lm_head repeats the row of AR's token at `index` for another token: an exact tie."""
    pair = tiny_pair("gpt_neox", seed=2)
    winner = build_decoder("ar", pair.target).generate(prompt, index + 1).tokens[index]
    partner = winner + 1 if winner < 255 else winner - 1
    with torch.no_grad():
        head = pair.target.get_output_embeddings().weight
        head[partner] = head[winner]
    return pair, partner


def measure(pair, methods, prompts, monkeypatch, interleave=False):
    monkeypatch.setitem(decoders.DECODERS, "flip", FlipAt)
    protocol = Protocol(max_new_tokens=12, warmup=0, repeats=1, interleave=interleave)
    runs = run_methods(pair, methods, [Prompt("", p) for p in prompts], protocol)
    return [summarize(run) | {"method": label} for label, run in runs.items()]


def test_first_divergence_index():
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 4], [1, 2, 3]) == 2
    assert first_divergence([1, 2], [1, 2, 3]) == 2
    assert first_divergence([1, 2, 3, 9], [1, 2, 3]) == 3
    assert first_divergence([], [5]) == 0


def test_identical_outputs_give_null_fields():
    fields = compare([4, 5, 6], Reference([4, 5, 6], [[3.0, 1.0]] * 3, "float16"))
    assert fields == {"exact_match": 1.0, "first_divergence": None, "divergence_margin": None,
                      "divergence_at_tie": None}


def test_running_past_ar_is_never_a_tie():
    fields = compare([4, 5, 6, 7], Reference([4, 5, 6], [[3.0, 3.0]] * 3, "float16"))
    assert fields["first_divergence"] == 3 and fields["divergence_margin"] is None
    assert fields["divergence_at_tie"] is False


def test_tie_epsilon_scales_with_dtype_and_magnitude():
    assert tie_epsilon("float16", 10.0) == pytest.approx(16 * 2**-10 * 10)
    assert tie_epsilon("float16", 0.01) == tie_epsilon("float16", -1.0) == pytest.approx(16 * 2**-10)
    assert tie_epsilon("float64", 10.0) < tie_epsilon("float32", 10.0) < tie_epsilon("float16", 10.0) < \
        tie_epsilon("bfloat16", 10.0)


def test_recorded_margins_are_the_targets_top2_and_leave_tokens_alone(pair64):
    prompt = random_prompts(1, seed=4)[0]
    plain = build_decoder("ar", pair64.target).generate(prompt, 10).tokens
    ar = build_decoder("ar", pair64.target)
    ar.record_margins = True
    assert ar.generate(prompt, 10).tokens == plain
    assert len(ar.top2) == len(plain)
    for i in (0, 4, 9):
        with torch.inference_mode():
            logits = pair64.target(torch.tensor([prompt + plain[:i]])).logits[0, -1]
        assert ar.top2[i] == pytest.approx(logits.topk(2).values.tolist(), rel=1e-6)


def test_the_benchmark_takes_margins_from_one_untimed_forward_equal_to_ars_steps(pair64):
    """The reference's top-2 logits come from a forward outside the timers; they equal AR's per-step ones."""
    prompt = random_prompts(1, seed=5)[0]
    ar = build_decoder("ar", pair64.target)
    ar.record_margins = True
    tokens = ar.generate(prompt, 12).tokens
    flat = sum(ar.top2, [])
    assert sum(top2_logits(pair64.target, prompt, tokens), []) == pytest.approx(flat, rel=1e-6)
    runs = run_methods(pair64, {"ar": ("ar", {})}, [Prompt("", prompt)], Protocol(max_new_tokens=12, warmup=0))
    assert sum(runs["ar"]["samples"][0]["top2_logits"], []) == pytest.approx(flat, rel=1e-6)


def test_a_flip_at_an_exact_tie_counts_as_tie(monkeypatch):
    prompt = random_prompts(1, seed=6)[0]
    pair, partner = tied_pair(3, prompt)
    summary = measure(pair, {"ar": ("ar", {}), "flip": ("flip", {"index": 3, "token": partner})}, [prompt],
                      monkeypatch)
    flip = summary[1]
    assert flip["first_divergence"] == {"diverged": 1, "compared": 1, "min_index": 3, "median_index": 3.0}
    assert flip["divergence_at_tie"] == {"count": 1, "fraction": 1.0}
    assert flip["divergence_not_at_tie"] == []
    table = printed(summary, "float32")
    assert "WARNING" not in table and "NOT-AT-TIE" not in table


@pytest.mark.parametrize("interleave", [False, True])
def test_a_planted_bug_is_flagged_loudly(pair64, monkeypatch, interleave):
    prompts = random_prompts(2, seed=8)
    summary = measure(pair64, {"ar": ("ar", {}), "flip": ("flip", {"index": 5})}, prompts, monkeypatch, interleave)
    flip = summary[1]
    assert flip["first_divergence"]["diverged"] == 2 and flip["divergence_at_tie"]["count"] == 0
    assert [(d["prompt"], d["index"]) for d in flip["divergence_not_at_tie"]] == [(0, 5), (1, 5)]
    assert all(d["margin"] > 1e-6 for d in flip["divergence_not_at_tie"])
    table = printed(summary, "float64")
    assert "NOT-AT-TIE" in table
    warnings = [line for line in table.splitlines() if line.startswith("WARNING:")]
    assert len(warnings) == 2 and "flip" in warnings[0] and "prompt 0" in warnings[0] and "token 5" in warnings[0]


def test_exact_methods_report_no_divergence(pair64, monkeypatch):
    prompts = random_prompts(2, seed=10)
    summary = measure(pair64, {"ar": ("ar", {}), "tree": ("tree", {"depth": 3, "branch": 2})}, prompts, monkeypatch)
    assert summary[0]["first_divergence"]["compared"] == 0  # AR is the reference, not compared with itself
    tree = summary[1]
    assert tree["first_divergence"] == {"diverged": 0, "compared": 2, "min_index": None, "median_index": None}
    assert tree["divergence_at_tie"] == {"count": 0, "fraction": None}
    assert tree["divergence_not_at_tie"] == []
