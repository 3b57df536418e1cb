"""Conversations: several stop tokens, two-turn prompts answered after each method's own first answer, exactness
over both turns, per-category metrics, the quick protocol's note."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest

from spec_decode import metrics, runner
from spec_decode.bench import Protocol, converse, run_methods, split_turns
from spec_decode.data import Prompt, load_prompts, read_records, turn_ids
from spec_decode.decoders import GenerationStats, build_decoder
from tests.conftest import FAST, run_cli
from tests.test_runner import compose_cfg

# A tiny chat template on the byte tokenizer: its EOS ends each turn (the tiny models can emit it).
CHAT_TEMPLATE = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}<|endoftext|>{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")
METHODS = {"ar": ("ar", {}), "linear": ("linear", {"k": 3}),
           "tree": ("tree", {"depth": 3, "branch": 2, "threshold": 0.05, "max_nodes": 16}),
           "tree_lookup": ("tree", {"depth": 3, "branch": 2, "threshold": 0.05, "max_nodes": 16, "lookup": 4,
                                    "ngram": 2}),
           "hf_assisted": ("hf_assisted", {}), "hf_lookup": ("hf_lookup", {}), "hf_greedy": ("hf_greedy", {})}


def chat_pair(pair):
    """The pair with a copy of its tokenizer that has a chat template."""
    tokenizer = copy.deepcopy(pair.tokenizer)
    tokenizer.chat_template = CHAT_TEMPLATE
    return dataclasses.replace(pair, tokenizer=tokenizer)


def conversation_prompts(tmp_path, tokenizer, chat: bool) -> list[Prompt]:
    """Two two-turn questions and one single-turn one, through the jsonl source."""
    rows = [{"turns": ["Tell me about rivers.", "Now shorter."], "category": "writing"},
            {"turns": ["Translate: Guten Tag"], "category": "translation"},
            {"turns": ["What is 2+3?", "And times 4?"], "category": "math"}]
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"name": "q", "source": "jsonl", "path": str(path), "turns_field": "turns", "category_field": "category",
           "chat": chat}
    return load_prompts(cfg, tokenizer, None, read_records(cfg))


@pytest.mark.parametrize("method", [m for m in METHODS if m != "ar"])
def test_every_method_stops_at_the_first_of_several_stop_tokens_where_ar_stops(pair64, method):
    prompt = list(range(30, 50))
    free = build_decoder("ar", pair64.target).generate(prompt, 60).tokens
    stops = [free[30], free[18]]
    expected = build_decoder("ar", pair64.target).generate(prompt, 60, stops).tokens
    assert expected[-1] in stops and len(expected) <= 19
    name, params = METHODS[method]
    decoder = build_decoder(name, pair64.target, pair64.draft, **params)
    assert decoder.generate(prompt, 60, stops).tokens == expected


def test_joined_stats_concatenate_rounds_and_sum_counts():
    a = GenerationStats(emitted_per_round=[2, 1], accepted_per_round=[1, 0], target_forwards=3, ttft_s=0.5,
                        total_s=2.0)
    b = GenerationStats(emitted_per_round=[3], accepted_per_round=[2], target_forwards=2, ttft_s=0.25, total_s=1.0)
    joined = GenerationStats.joined([a, b])
    assert joined.emitted_per_round == [2, 1, 3] and joined.accepted == 3
    assert (joined.target_forwards, joined.ttft_s, joined.total_s) == (5, 0.75, 3.0)


@pytest.mark.parametrize("chat", [False, True])
def test_two_turn_prompts_are_exact_over_both_turns_for_every_method(tmp_path, pair64, chat):
    pair = chat_pair(pair64) if chat else pair64
    prompts = conversation_prompts(tmp_path, pair.tokenizer, chat)
    protocol = Protocol(max_new_tokens=12, warmup=1, repeats=1, chat=chat,
                        stop_token_ids=(pair.tokenizer.eos_token_id,))
    runs = run_methods(pair, METHODS, prompts, protocol)
    reference = runs["ar"]["samples"]
    for sample, prompt in zip(reference, prompts, strict=True):
        assert len(sample["turns"]) == max(len(prompt.turns), 1) and sum(sample["turns"]) == sample["new_tokens"]
        assert len(sample["top2_logits"]) == sample["new_tokens"]
        assert sample["category"] == prompt.category
    for label, run in runs.items():
        for sample in run["samples"]:
            assert sample["tokens"] == reference[sample["prompt"]]["tokens"], label
            if label != "ar":
                assert sample["exact_match"] == 1.0 and sample["first_divergence"] is None, label


class ChangedFirstAnswer:
    """AR, except that its first answer is replaced by `answer`: its second turn must be asked after that answer."""

    def __init__(self, target, answer: list[int]):
        self.ar, self.answer = build_decoder("ar", target), answer
        self.inputs: list[list[int]] = []

    def generate(self, prompt_ids, max_new_tokens, eos_token_id=None, seed=0):
        self.inputs.append(list(prompt_ids))
        out = self.ar.generate(prompt_ids, max_new_tokens, eos_token_id, seed)
        if len(self.inputs) == 1:
            out.tokens = list(self.answer)
        return out


def test_the_second_turn_is_built_from_the_methods_own_first_answer(tmp_path, pair64):
    prompt = conversation_prompts(tmp_path, pair64.tokenizer, False)[0]
    own = pair64.tokenizer("Rivers run to the sea.", add_special_tokens=False)["input_ids"]
    decoder = ChangedFirstAnswer(pair64.target, own)
    out, turns = converse(decoder, pair64, prompt, Protocol(max_new_tokens=8))
    first, second = split_turns(out.tokens, turns)
    assert decoder.inputs[0] == prompt.ids and first == own
    assert decoder.inputs[1] == turn_ids(prompt, pair64.tokenizer, False, [own])
    ar_first = build_decoder("ar", pair64.target).generate(prompt.ids, 8, pair64.eos_token_id).tokens
    assert decoder.inputs[1] != turn_ids(prompt, pair64.tokenizer, False, [ar_first])
    assert "Rivers run to the sea." in pair64.tokenizer.decode(decoder.inputs[1])
    assert len(second) == turns[1] > 0


def sample(prompt: int, category: str, tokens: int, seconds: float, emitted: list[int]) -> dict:
    return {"prompt": prompt, "repeat": 0, "category": category, "new_tokens": tokens, "seconds": seconds,
            "emitted_per_round": emitted, "accepted": sum(emitted) - len(emitted), "drafted": 4 * len(emitted),
            "exact_match": 1.0}


def test_by_category_groups_mt_bench_categories_and_computes_spec_bench_speedups():
    base = [sample(0, "writing", 10, 1.0, [1] * 10), sample(1, "coding", 10, 2.0, [1] * 10),
            sample(2, "translation", 8, 1.0, [1] * 8)]
    fast = [sample(0, "writing", 10, 0.5, [3, 3, 4]), sample(1, "coding", 10, 0.5, [5, 5]),
            sample(2, "translation", 8, 2.0, [2, 2, 2, 2])]
    groups = metrics.by_category(fast, base)
    assert list(groups) == ["mt_bench", "translation"]
    mt = groups["mt_bench"]
    assert mt["speedup"] == pytest.approx(((20 + 20) / 2) / ((10 + 5) / 2))  # mean tok/s over mean tok/s
    assert mt["tokens_per_round"] == pytest.approx(20 / 5) and mt["acceptance_rate"] == pytest.approx(15 / 20)
    assert (mt["samples"], mt["prompts"], mt["exact_match"]) == (2, 2, 1.0)
    assert groups["translation"]["speedup"] == pytest.approx(4 / 8)


def test_the_quick_protocol_says_so_and_names_the_full_one():
    note = runner.quick_note(compose_cfg())
    assert len(note) == 1 and "quick run" in note[0] and "protocol=full" in note[0]
    assert runner.quick_note(compose_cfg("protocol=full")) == []
    assert runner.quick_note(compose_cfg("experiment=main")) == []


def test_a_bad_prompt_file_ends_with_one_error_line_before_any_model_loads(tmp_path):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"turns": ["fine"], "category": "qa"}\n{"turns": ["broken", \n')
    out = tmp_path / "out"
    proc = run_cli("model=tiny", "dataset=jsonl", f"dataset.path={bad}", "dataset.turns_field=turns",
                   f"results_dir={out}")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{bad}:2" in errors[0] and "Traceback" not in proc.stderr
    assert not (out / "result.json").exists()


def test_a_categorised_run_prints_its_speedup_per_category(tmp_path):
    rows = [{"category": c, "turns": [f"Question {i} about {c}?"]} for i, c in enumerate(["qa", "rag", "qa"])]
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = run_cli(*FAST, "dataset=jsonl", f"dataset.path={path}", "dataset.turns_field=turns",
                   "dataset.category_field=category", "num_prompts=null", "methods=[ar,linear]",
                   f"results_dir={tmp_path}/out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = proc.stdout[proc.stdout.index("speedup by category"):].splitlines()
    assert table[1].split() == ["method", "qa", "rag", "overall", "tok/round"]
    assert [line.split()[0] for line in table[2:4]] == ["ar", "linear"]
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert [p["category"] for p in result["prompts"]] == ["qa", "rag", "qa"]
    linear = next(s for s in result["summary"] if s["method"] == "linear")
    assert linear["by_category"]["qa"]["prompts"] == 2 and linear["by_category"]["qa"]["exact_match"] == 1.0
    assert result["prompting"]["chat"] is False
