"""hf_greedy: transformers' own greedy `generate` as a method, exact vs AR, added to comparisons with HF peers."""

from __future__ import annotations

import pytest

from spec_decode.decoders import build_decoder
from spec_decode.runner import CONF_DIR, method_specs
from tests.conftest import random_prompts
from tests.test_config import compose_cfg


def test_matches_ar(pair64):
    decoder = build_decoder("hf_greedy", pair64.target)
    ar = build_decoder("ar", pair64.target)
    for prompt in random_prompts(5, seed=23):
        out = decoder.generate(prompt, 32)
        assert out.tokens == ar.generate(prompt, 32).tokens
        assert out.stats.emitted_per_round == [1] * 32 and out.stats.target_forwards == 32


def test_stops_at_eos_where_ar_stops(pair64):
    prompt = random_prompts(1, seed=3)[0]
    eos = build_decoder("ar", pair64.target).generate(prompt, 40).tokens[20]
    expected = build_decoder("ar", pair64.target).generate(prompt, 40, eos).tokens
    assert build_decoder("hf_greedy", pair64.target).generate(prompt, 40, eos).tokens == expected


def test_knobs_are_recorded(pair64):
    assert build_decoder("hf_greedy", pair64.target).params() == {"num_beams": 1, "cache_implementation": "dynamic"}


@pytest.mark.parametrize(("overrides", "labels"), [
    (["method=hf_assisted"], ["ar", "hf_greedy", "hf_assisted"]),
    (["methods=[linear,hf_lookup,tree]"], ["ar", "hf_greedy", "linear", "hf_lookup", "tree"]),
    (["methods=[tree,ar,hf_assisted]"], ["ar", "hf_greedy", "tree", "hf_assisted"]),
    (["methods=[ar,linear,hf_greedy,hf_assisted]"], ["ar", "linear", "hf_greedy", "hf_assisted"]),
    (["methods=[ar,linear,tree]"], ["ar", "linear", "tree"]),
    (["experiment=compare"], ["ar", "hf_greedy", "hf_assisted", "linear", "tree"]),
])
def test_comparisons_with_an_hf_peer_get_hf_greedy_after_ar(overrides, labels):
    assert list(method_specs(compose_cfg(*overrides), CONF_DIR)) == labels
