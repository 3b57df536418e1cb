"""Conversation prompt sets (Spec-Bench, user JSONL): selection, chat templates, later turns, stop tokens, and a
clear error for every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spec_decode.data import DatasetError, load_prompts, read_records, stop_token_ids, turn_ids, uses_chat
from spec_decode.models import byte_tokenizer

SPEC_BENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "spec_bench" / "question.jsonl"
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TEXT = {"name": "builtin", "source": "builtin", "min_tokens": 1, "max_tokens": 100}


def chat_tokenizer():
    """The byte tokenizer with a ChatML template and its two special tokens."""
    tokenizer = byte_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHATML
    return tokenizer


def write_jsonl(tmp_path: Path, lines: list) -> Path:
    """A JSONL file of the given records (strings are written as they are)."""
    file = tmp_path / "prompts.jsonl"
    file.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return file


def conversations(tmp_path: Path, per_category: dict[str, int]) -> Path:
    """A Spec-Bench-like file: categories in blocks, two-turn questions named after category and index."""
    return write_jsonl(tmp_path, [{"question_id": i, "category": category, "turns": [f"{category} {i}?", "More?"]}
                                  for category, count in per_category.items() for i in range(count)])


def spec_cfg(path: Path, **overrides) -> dict:
    return {"name": "spec_bench", "source": "spec_bench", "path": str(path), "categories": None,
            "per_category": None, "chat": "auto", **overrides}


def jsonl_cfg(path: Path, **overrides) -> dict:
    return {"name": "jsonl", "source": "jsonl", "path": str(path), "text_field": None, "turns_field": None,
            "category_field": None, "categories": None, "per_category": None, "chat": "auto", **overrides}


@pytest.mark.skipif(not SPEC_BENCH.is_file(), reason="../shared/data/spec_bench/question.jsonl not present")
def test_real_spec_bench_file_has_480_questions_in_13_categories():
    cfg = spec_cfg(SPEC_BENCH)
    records = read_records(cfg)
    assert len(records) == 480 and len({r["category"] for r in records}) == 13
    assert sum(len(r["turns"]) == 2 for r in records) == 80
    prompts = load_prompts(cfg, byte_tokenizer(), 13, records)
    assert len({p.category for p in prompts}) == 13


def test_categories_and_per_category_pick_in_file_order(tmp_path):
    cfg = spec_cfg(conversations(tmp_path, {"a": 3, "b": 3, "c": 3}), categories=["c", "a"], per_category=2)
    assert [r["turns"][0] for r in read_records(cfg)] == ["a 0?", "a 1?", "c 0?", "c 1?"]


def test_num_prompts_takes_round_robin_over_categories(tmp_path):
    cfg = spec_cfg(conversations(tmp_path, {"a": 3, "b": 1, "c": 2}))
    prompts = load_prompts(cfg, byte_tokenizer(), 5)
    assert [p.text for p in prompts] == ["a 0?", "b 0?", "c 0?", "a 1?", "c 1?"]
    assert len(load_prompts(cfg, byte_tokenizer(), None)) == 6


def test_num_prompts_beyond_the_selection_says_how_many_there_are(tmp_path):
    cfg = spec_cfg(conversations(tmp_path, {"a": 2, "b": 2}), categories=["a"])
    with pytest.raises(DatasetError, match=r"selects 2 prompts but num_prompts=3.*at most 2"):
        load_prompts(cfg, byte_tokenizer(), 3)


def test_without_a_template_auto_feeds_the_first_turn_as_plain_text(tmp_path):
    cfg = spec_cfg(conversations(tmp_path, {"a": 1}))
    tokenizer = byte_tokenizer()
    (prompt,) = load_prompts(cfg, tokenizer, 1)
    assert not uses_chat(cfg, tokenizer)
    assert (prompt.text, prompt.category, prompt.turns) == ("a 0?", "a", ["a 0?", "More?"])
    assert prompt.ids == tokenizer("a 0?", add_special_tokens=False)["input_ids"]


def test_with_a_template_auto_applies_it_and_false_does_not(tmp_path):
    path = conversations(tmp_path, {"a": 1})
    tokenizer = chat_tokenizer()
    (prompt,) = load_prompts(spec_cfg(path), tokenizer, 1)
    messages = [{"role": "user", "content": "a 0?"}]
    assert prompt.text == "<|im_start|>user\na 0?<|im_end|>\n<|im_start|>assistant\n"
    assert prompt.ids == tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
    assert load_prompts(spec_cfg(path, chat=False), tokenizer, 1)[0].text == "a 0?"
    assert load_prompts(spec_cfg(path, chat=True), tokenizer, 1)[0].ids == prompt.ids


def test_text_sources_default_to_plain_text_and_can_be_wrapped():
    tokenizer = chat_tokenizer()
    assert not uses_chat(TEXT, tokenizer)
    (plain,) = load_prompts(TEXT, tokenizer, 1)
    (wrapped,) = load_prompts({**TEXT, "chat": True}, tokenizer, 1)
    assert wrapped.text == f"<|im_start|>user\n{plain.text}<|im_end|>\n<|im_start|>assistant\n"
    assert plain.turns == [] and plain.category is None


def test_text_sources_with_null_num_prompts_give_every_line_that_qualifies():
    assert len(load_prompts(TEXT, byte_tokenizer(), None)) == 8


@pytest.mark.parametrize("chat", [True, False])
def test_second_turn_follows_the_methods_own_answer(tmp_path, chat):
    tokenizer = chat_tokenizer()
    (prompt,) = load_prompts(spec_cfg(conversations(tmp_path, {"a": 1}), chat=chat), tokenizer, 1)
    yes, no = ([*tokenizer(f" {word} ")["input_ids"], tokenizer.eos_token_id] for word in ("Yes", "No"))
    assert turn_ids(prompt, tokenizer, chat, []) == prompt.ids
    second = turn_ids(prompt, tokenizer, chat, [yes])
    assert second != turn_ids(prompt, tokenizer, chat, [no])
    expected = (f"{prompt.text}Yes<|im_end|>\n<|im_start|>user\nMore?<|im_end|>\n<|im_start|>assistant\n" if chat
                else "a 0?\n\nYes\n\nMore?")
    assert tokenizer.decode(second) == expected


def test_stop_tokens_add_the_end_of_turn_token_only_when_chat():
    tokenizer = chat_tokenizer()
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert stop_token_ids(tokenizer, False) == [tokenizer.eos_token_id]
    assert stop_token_ids(tokenizer, True) == sorted({tokenizer.eos_token_id, end_of_turn})
    assert stop_token_ids(byte_tokenizer(), True) == [byte_tokenizer().eos_token_id]


def test_jsonl_text_field_gives_one_turn_prompts_without_categories(tmp_path):
    path = write_jsonl(tmp_path, [{"prompt": "one"}, {"prompt": "two"}])
    records = read_records(jsonl_cfg(path, text_field="prompt"))
    assert records == [{"turns": ["one"], "category": None}, {"turns": ["two"], "category": None}]


def test_jsonl_turns_and_category_fields_are_configurable(tmp_path):
    path = write_jsonl(tmp_path, [{"q": ["x", "y"], "kind": "k1"}, {"q": ["z"], "kind": "k2"}])
    cfg = jsonl_cfg(path, turns_field="q", category_field="kind", categories=["k2"])
    assert read_records(cfg) == [{"turns": ["z"], "category": "k2"}]


def test_missing_file_names_it(tmp_path):
    with pytest.raises(DatasetError, match=r"missing\.jsonl not found; set dataset.path"):
        read_records(spec_cfg(tmp_path / "missing.jsonl"))


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", r"prompts\.jsonl:2 is not JSON"),
    ('["a list"]', r"prompts\.jsonl:2 is not a JSON object"),
    ({"category": "a"}, r"prompts\.jsonl:2: field 'turns' is missing"),
    ({"category": "a", "turns": []}, r"prompts\.jsonl:2: field 'turns' .*non-empty list of strings"),
    ({"category": "a", "turns": "just text"}, r"prompts\.jsonl:2: field 'turns'"),
    ({"category": "a", "turns": ["ok", 3]}, r"prompts\.jsonl:2: field 'turns'"),
    ({"turns": ["no category"]}, r"prompts\.jsonl:2: field 'category' is missing"),
])
def test_bad_spec_bench_lines_name_file_line_and_field(tmp_path, line, message):
    path = write_jsonl(tmp_path, [{"category": "a", "turns": ["fine"]}, line])
    with pytest.raises(DatasetError, match=message):
        read_records(spec_cfg(path))


def test_bad_jsonl_text_field_names_file_line_and_field(tmp_path):
    path = write_jsonl(tmp_path, [{"prompt": "fine"}, {"prompt": ""}])
    with pytest.raises(DatasetError, match=r"prompts\.jsonl:2: field 'prompt' is missing or not a non-empty string"):
        read_records(jsonl_cfg(path, text_field="prompt"))


def test_a_file_without_records_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match=r"prompts\.jsonl holds no records"):
        read_records(spec_cfg(write_jsonl(tmp_path, [""])))


@pytest.mark.parametrize("fields", [{}, {"text_field": "prompt", "turns_field": "turns"}])
def test_jsonl_needs_exactly_one_of_text_and_turns_field(tmp_path, fields):
    path = write_jsonl(tmp_path, [{"prompt": "p", "turns": ["t"]}])
    with pytest.raises(DatasetError, match=r"prompts\.jsonl.*set exactly one of dataset.text_field"):
        read_records(jsonl_cfg(path, **fields))


@pytest.mark.parametrize("selection", [{"categories": ["a"]}, {"per_category": 1}])
def test_jsonl_selection_needs_a_category_field(tmp_path, selection):
    path = write_jsonl(tmp_path, [{"prompt": "p"}])
    with pytest.raises(DatasetError, match=r"prompts\.jsonl.*needs dataset.category_field"):
        read_records(jsonl_cfg(path, text_field="prompt", **selection))


def test_unknown_category_lists_the_known_ones(tmp_path):
    cfg = spec_cfg(conversations(tmp_path, {"a": 1, "b": 1}), categories=["a", "zzz"])
    with pytest.raises(DatasetError, match=r"prompts\.jsonl.*unknown category 'zzz'.*the file has a, b"):
        read_records(cfg)


def test_categories_must_be_a_list(tmp_path):
    with pytest.raises(DatasetError, match=r"prompts\.jsonl.*dataset.categories='a' is not a non-empty list"):
        read_records(spec_cfg(conversations(tmp_path, {"a": 1}), categories="a"))


@pytest.mark.parametrize("per_category", [0, -1, 1.5, True])
def test_per_category_must_be_a_positive_integer(tmp_path, per_category):
    with pytest.raises(DatasetError, match=r"prompts\.jsonl.*dataset.per_category=.* not a positive integer"):
        read_records(spec_cfg(conversations(tmp_path, {"a": 1}), per_category=per_category))


def test_per_category_beyond_a_category_names_it_and_its_count(tmp_path):
    cfg = spec_cfg(conversations(tmp_path, {"a": 3, "b": 1}), per_category=2)
    with pytest.raises(DatasetError, match=r"prompts\.jsonl.*category 'b' has only 1 records"):
        read_records(cfg)


@pytest.mark.parametrize("selection", [{"categories": ["a"]}, {"per_category": 1}])
def test_text_sources_refuse_category_selection(selection):
    with pytest.raises(DatasetError, match=r"dataset.(categories|per_category) is set but source 'builtin'"):
        read_records({**TEXT, **selection})


def test_unknown_source_lists_the_known_ones():
    with pytest.raises(DatasetError, match=r"unknown dataset source 'csv'.*builtin, hub, local, spec_bench, jsonl"):
        read_records({"name": "x", "source": "csv"})


@pytest.mark.parametrize("chat", ["yes", 1, None])
def test_chat_must_be_auto_true_or_false(tmp_path, chat):
    with pytest.raises(DatasetError, match=r"prompts\.jsonl.*dataset.chat=.* is not auto, true or false"):
        read_records(spec_cfg(conversations(tmp_path, {"a": 1}), chat=chat))


def test_chat_true_without_a_template_says_so(tmp_path):
    cfg = spec_cfg(conversations(tmp_path, {"a": 1}), chat=True)
    with pytest.raises(DatasetError, match=r"prompts\.jsonl.*chat=true but the tokenizer has no chat template"):
        load_prompts(cfg, byte_tokenizer(), 1)
