"""Host syncs per round: a speculative round reads the device at most twice (timers excluded, profile off).

On CPU, `tests/synccount.SyncCounter` counts every call that would block on a CUDA device (`.item()`,
`.tolist()`, `nonzero`, `bool()/int()/float()` of a tensor, boolean-mask or 0-d-tensor indexing, `.cpu()`, and
the ops whose output size depends on values). Reads of a host mirror (an early-stop flag or a level's live count,
copied with `non_blocking=True` and read only once its CUDA event has completed) count apart as peeks: never blocking.
Measured with this counter before the sync-light rework (llama tiny pair, 40 new tokens, the prefill's read
spread over the rounds): Linear K=4 2.0 reads/round, K=6 with confidence 0.4 3.1; Tree depth 8 branch 3 cap 40:
14.3 (tau 0 and 0.05), 6.7 (tau 0.3), 21.2 with lookup 8, 21.4 with lookup_first. After: Linear 1.0 (with
confidence too: on CPU every early-stop flag is peeked; on CUDA one more read when some were not yet there),
Tree 2.0 in every configuration (the live tree's size before verifying, the accepted count with the tokens).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from spec_decode.costmodel import OnlineCost
from spec_decode.decoders import build_decoder
from spec_decode.decoders.speculative import Peek
from spec_decode.models import tiny_pair
from tests.conftest import random_prompts
from tests.synccount import SyncCounter

CONFIGS = [
    ("ar", {}),
    ("linear", {"k": 4}),
    ("linear", {"k": 6, "confidence": 0.4}),
    ("tree", {"depth": 8, "branch": 3, "threshold": 0.0, "max_nodes": 40}),
    ("tree", {"depth": 8, "branch": 3, "threshold": 0.05, "max_nodes": 40}),
    ("tree", {"depth": 8, "branch": 3, "threshold": 0.3}),
    ("tree", {"depth": 8, "branch": 3, "threshold": 0.05, "max_nodes": 40, "lookup": 8}),
    ("tree", {"depth": 8, "branch": 3, "threshold": 0.3, "max_nodes": 16, "lookup": 8, "lookup_first": True}),
    ("tree", {"depth": 6, "branch": 2, "threshold": 0.05, "max_nodes": 16, "lookup": 8, "recycle": 16,
              "budget_split": True}),
]
BUDGET = 2  # blocking host reads per round; the prefill reads once more (the first token)


def repeating_prompts() -> list[list[int]]:
    """Prompts that repeat themselves, so lookup chains match too."""
    return [p + p[:12] for p in random_prompts(2, seed=4, lengths=(8, 30))]


@pytest.mark.parametrize(("method", "params"), CONFIGS, ids=str)
def test_at_most_two_host_reads_per_round(pair, method, params):
    decoder = build_decoder(method, pair.target, pair.draft, **params)
    for prompt in repeating_prompts():
        with SyncCounter() as counter:
            out = decoder.generate(prompt, 40)
        rounds = len(out.stats.emitted_per_round)
        assert counter.total - 1 <= BUDGET * rounds, dict(counter.reads)
        if method != "tree" and not params.get("confidence"):
            assert counter.total - 1 <= rounds  # one read a round: the accepted count with the tokens


@pytest.mark.cuda
@pytest.mark.parametrize(("method", "params"), CONFIGS, ids=str)
def test_cuda_sync_budget(method, params):
    """The same budget on CUDA, counted by torch's sync debug mode (a warning per synchronizing call).

    Timers are excluded (the clock's synchronize is switched off); each generation may also sync twice outside its
    rounds: the prompt's upload from pageable memory and the prefill's first token.
    """
    pair = tiny_pair("llama", seed=0)
    target, draft = pair.target.to("cuda"), pair.draft.to("cuda")
    decoder = build_decoder(method, target, draft, **params)
    decoder.clock.cuda = False
    decoder.generate(repeating_prompts()[0], 8)  # warm up kernels and allocators outside the count
    for prompt in repeating_prompts():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                out = decoder.generate(prompt, 40)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
        assert len(syncs) - 2 <= BUDGET * len(out.stats.emitted_per_round), syncs[:5]


@pytest.mark.parametrize(("method", "params"), [c for c in CONFIGS if c[0] != "ar"] + [
    ("tree", {"depth": 6, "branch": 2, "threshold": 0.3, "max_nodes": 8, "lookup": 16, "ngram": 2,
              "lookup_first": True})], ids=str)
def test_stops_seen_late_change_nothing_but_draft_forwards(pair64, monkeypatch, method, params):
    """As on a busy GPU where no early-stop flag reaches the host in time: same tokens, same trees, same counts."""
    prompt = repeating_prompts()[1]
    params = params | {"fallback": False}  # the same rounds in both runs, whatever their times
    monkeypatch.setattr(OnlineCost, "coefficients", lambda self: None)  # budget split: acceptance only, untimed
    on_time = build_decoder(method, pair64.target, pair64.draft, **params).generate(prompt, 40)
    monkeypatch.setattr(Peek, "seen", lambda self: [])
    monkeypatch.setattr(Peek, "all_seen", property(lambda self: False))
    with SyncCounter() as counter:
        late = build_decoder(method, pair64.target, pair64.draft, **params).generate(prompt, 40)
    assert late.tokens == on_time.tokens
    for key in ("emitted_per_round", "drafted_per_round", "accepted_per_round", "tree_nodes_per_round"):
        assert getattr(late.stats, key) == getattr(on_time.stats, key), key
    assert late.stats.draft_forwards >= on_time.stats.draft_forwards
    assert counter.total - 1 <= BUDGET * late.stats.rounds


@pytest.mark.parametrize(("method", "params"), [("tree", {"depth": 8, "branch": 3, "threshold": 0.0, "max_nodes": 40}),
                                                ("tree", {"depth": 6, "branch": 2, "max_nodes": 8, "lookup": 8})])
def test_stops_seen_late_fit_a_static_draft_cache(pair64, monkeypatch, method, params):
    """Late peeks feed the draft dead slots too; with a pre-allocated draft cache the tokens stay AR's."""
    prompt = repeating_prompts()[1]
    reference = build_decoder("ar", pair64.target).generate(prompt, 40).tokens
    monkeypatch.setattr(Peek, "seen", lambda self: [])
    monkeypatch.setattr(Peek, "all_seen", property(lambda self: False))
    decoder = build_decoder(method, pair64.target, pair64.draft, **params)
    decoder.static_cache = True
    assert decoder.generate(prompt, 40).tokens == reference
