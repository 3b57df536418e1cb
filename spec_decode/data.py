"""Prompt sets: text lines (WikiText-2 or CNN/DailyMail through `datasets`, from the Hub or a local copy, or a
built-in set needing no data) and conversations from JSONL files (Spec-Bench's questions or any user file)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

BUILTIN_PROMPTS = (
    "The future of artificial intelligence is",
    "In 1923, the small coastal town of Port Ellis was known for its lighthouse and its",
    "The theory of general relativity describes gravity as the curvature of spacetime, which",
    "To make a good cup of tea, first bring fresh water to the boil, then",
    "The river rises in the northern hills and flows south through farmland before",
    "During the second half of the season, the team's defence improved markedly because",
    "The museum's collection includes paintings, sculptures and manuscripts from",
    "A compiler translates source code written in a high-level language into",
)


TEXT_SOURCES = ("builtin", "hub", "local")
CONVERSATION_SOURCES = ("spec_bench", "jsonl")
SPEC_BENCH_FIELDS = {"turns_field": "turns", "text_field": None, "category_field": "category"}
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")


class DatasetError(RuntimeError):
    """A prompt set could not be loaded; the message says how to provide it."""


@dataclass
class Prompt:
    """One benchmark prompt: its first turn as fed (chat template applied when chat), its token ids, its category
    and, for conversation sources, the user messages of its conversation."""

    text: str
    ids: list[int]
    category: str | None = None
    turns: list[str] = field(default_factory=list)


def load_prompts(cfg: Mapping, tokenizer, num_prompts: int | None, records: list[dict] | None = None) -> list[Prompt]:
    """The configured set's prompts (from its `records`, read before, when given): text sources give their first
    `num_prompts` lines of `min_tokens`..`max_tokens` tokens; conversation sources give `num_prompts` conversations
    taken round-robin over categories (null: all), their first turn uncut."""
    records = read_records(cfg) if records is None else records
    chat = uses_chat(cfg, tokenizer)
    if _source(cfg) in TEXT_SOURCES:
        return _text_prompts(cfg, tokenizer, num_prompts, [record["turns"][0] for record in records], chat)
    picked = round_robin(records, num_prompts, cfg)
    return [_conversation_prompt(record, tokenizer, chat) for record in picked]


def _text_prompts(cfg: Mapping, tokenizer, num_prompts: int | None, lines: list[str], chat: bool) -> list[Prompt]:
    """Text lines cut to `min_tokens`..`max_tokens` tokens, the cut text wrapped in the chat template when chat."""
    prompts = cut_prompts(lines, tokenizer, cfg.get("min_tokens", 20), cfg.get("max_tokens", 100), num_prompts)
    if num_prompts is not None and len(prompts) < num_prompts:
        raise DatasetError(f"dataset {cfg.get('name')!r} gave only {len(prompts)} prompts of "
                           f"{cfg.get('min_tokens')}-{cfg.get('max_tokens')} tokens; {num_prompts} were asked for")
    if not chat:
        return prompts
    texts = [conversation_text([prompt.text], [], tokenizer, chat) for prompt in prompts]
    return [Prompt(text, _ids(tokenizer, text)) for text in texts]


def _conversation_prompt(record: dict, tokenizer, chat: bool) -> Prompt:
    """A conversation's prompt: its first user turn as fed."""
    text = conversation_text(record["turns"][:1], [], tokenizer, chat)
    return Prompt(text, _ids(tokenizer, text), record["category"], list(record["turns"]))


def round_robin(records: list[dict], num_prompts: int | None, cfg: Mapping) -> list[dict]:
    """`num_prompts` records taken in turn from each category (in order of first appearance), file order within
    one; all of them when None."""
    if num_prompts is None:
        return list(records)
    if num_prompts > len(records):
        raise DatasetError(f"{_where(cfg)} selects {len(records)} prompts but num_prompts={num_prompts}; "
                           f"set num_prompts to at most {len(records)} (or null for all)")
    groups: dict = {}
    for record in records:
        groups.setdefault(record["category"], []).append(record)
    queues = [iter(group) for group in groups.values()]
    picked = []
    while len(picked) < num_prompts:
        picked.extend(record for record in (next(queue, None) for queue in queues) if record is not None)
    return picked[:num_prompts]


def uses_chat(cfg: Mapping, tokenizer) -> bool:
    """Whether prompts go through the tokenizer's chat template (`dataset.chat`: auto = when it has one)."""
    chat = _chat_setting(cfg)
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat is True and not has_template:
        raise DatasetError(f"{_where(cfg)}: dataset.chat=true but the tokenizer has no chat template; "
                           "set dataset.chat=auto or false, or use a model whose tokenizer has one")
    return has_template if chat == "auto" else chat


def _chat_setting(cfg: Mapping):
    """`dataset.chat` checked: "auto", true or false (text sources default to false, conversations to auto)."""
    chat = cfg.get("chat", False if _source(cfg) in TEXT_SOURCES else "auto")
    if chat != "auto" and not isinstance(chat, bool):
        raise DatasetError(f"{_where(cfg)}: dataset.chat={chat!r} is not auto, true or false; set one of those")
    return chat


def turn_ids(prompt: Prompt, tokenizer, chat: bool, answers: list[list[int]]) -> list[int]:
    """Token ids of turn len(answers) of the prompt's conversation: its user turns interleaved with the method's
    own earlier `answers` (decoded without special tokens, stripped, as Spec-Bench builds its second turn)."""
    if not answers:
        return list(prompt.ids)
    if len(answers) >= len(prompt.turns):
        raise ValueError(f"the prompt has {len(prompt.turns)} turns; turn {len(answers)} does not exist")
    replies = [tokenizer.decode(answer, skip_special_tokens=True).strip() for answer in answers]
    return _ids(tokenizer, conversation_text(prompt.turns[:len(answers) + 1], replies, tokenizer, chat))


def conversation_text(turns: list[str], replies: list[str], tokenizer, chat: bool) -> str:
    """User turns interleaved with replies: through the chat template (ready for the next reply) when chat, else
    the texts joined with a blank line."""
    texts = [turns[0]]
    for reply, turn in zip(replies, turns[1:], strict=True):
        texts += [reply, turn]
    if not chat:
        return "\n\n".join(texts)
    messages = [{"role": ("user", "assistant")[i % 2], "content": text} for i, text in enumerate(texts)]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def _ids(tokenizer, text: str) -> list[int]:
    """The text's token ids, no special tokens added (a chat template writes its own)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def stop_token_ids(tokenizer, chat: bool) -> list[int]:
    """EOS plus, when chat, the end-of-turn tokens of the tokenizer's vocabulary; sorted, unique."""
    vocab = tokenizer.get_vocab()
    stops = {tokenizer.eos_token_id} - {None}
    if chat:
        stops |= {vocab[token] for token in END_OF_TURN_TOKENS if token in vocab}
    return sorted(stops)


def cut_prompts(lines, tokenizer, min_tokens: int, max_tokens: int, count: int | None) -> list[Prompt]:
    """The first `count` article lines (all when None; headings and blank lines skipped), each cut to its first
    `max_tokens` tokens and kept when it has at least `min_tokens`."""
    prompts = []
    for line in lines:
        text = line.strip()
        if not text or is_heading(text):
            continue
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
        if len(ids) >= min_tokens:
            prompts.append(Prompt(tokenizer.decode(ids), ids))
        if len(prompts) == count:
            break
    return prompts


def is_heading(text: str) -> bool:
    """WikiText section headings look like `= Title =` or `= = Section = =`."""
    return text.startswith("=") and text.endswith("=")


def read_records(cfg: Mapping) -> list[dict]:
    """The configured set's raw records [{"turns": [...], "category": str | None}], checked and selected
    (`categories`, `per_category`); DatasetError when it cannot be read. Needs no tokenizer."""
    source = _source(cfg)
    _chat_setting(cfg)
    if source in TEXT_SOURCES:
        _refuse_categories(cfg)
        return [{"turns": [line], "category": None} for line in read_lines(cfg)]
    fields = SPEC_BENCH_FIELDS if source == "spec_bench" else _jsonl_fields(cfg)
    return select_categories(_jsonl_records(cfg.get("path"), fields), cfg, fields)


def _source(cfg: Mapping) -> str:
    """`dataset.source`, checked."""
    source = cfg.get("source", "builtin")
    if source not in TEXT_SOURCES + CONVERSATION_SOURCES:
        raise DatasetError(f"unknown dataset source {source!r}; set dataset.source to one of "
                           f"{', '.join(TEXT_SOURCES + CONVERSATION_SOURCES)}")
    return source


def _where(cfg: Mapping) -> str:
    """The dataset's file (or name) for error messages."""
    return f"dataset {cfg.get('name')!r} ({cfg['path']})" if cfg.get("path") else f"dataset {cfg.get('name')!r}"


def _refuse_categories(cfg: Mapping) -> None:
    """Text sources have no categories."""
    for key in ("categories", "per_category"):
        if cfg.get(key) is not None:
            raise DatasetError(f"{_where(cfg)}: dataset.{key} is set but source {cfg.get('source', 'builtin')!r} "
                               "holds text lines without categories; set it to null or use source spec_bench/jsonl")


def _jsonl_fields(cfg: Mapping) -> dict:
    """The user JSONL's field names: exactly one of text_field / turns_field, and category_field when selecting."""
    fields = {key: cfg.get(key) for key in SPEC_BENCH_FIELDS}
    if (fields["text_field"] is None) == (fields["turns_field"] is None):
        raise DatasetError(f"{_where(cfg)}: set exactly one of dataset.text_field (one-turn prompts) and "
                           "dataset.turns_field (a list of user turns) to a field name of the records")
    if fields["category_field"] is None:
        for key in ("categories", "per_category"):
            if cfg.get(key) is not None:
                raise DatasetError(f"{_where(cfg)}: dataset.{key} needs dataset.category_field, the field "
                                   f"naming each record's category; set it or set dataset.{key}=null")
    return fields


def _jsonl_records(path: str | None, fields: dict) -> list[dict]:
    """A JSONL file's records, checked line by line, then read through `datasets`."""
    file = Path(path or "")
    if not path or not file.is_file():
        raise DatasetError(f"dataset file {file} not found; set dataset.path to a JSONL file "
                           "(e.g. dataset.path=../shared/data/spec_bench/question.jsonl)")
    count = sum(_check_line(file, number, line, fields)
                for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1))
    if not count:
        raise DatasetError(f"{file} holds no records; put one JSON object a line in it")
    return _dataset_records(file, fields)


def _check_line(file: Path, number: int, line: str, fields: dict) -> int:
    """1 when the line is a valid record, 0 when blank; DatasetError naming file:line and field otherwise."""
    if not line.strip():
        return 0
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{file}:{number} is not JSON ({err.msg}); write one JSON object a line") from err
    if not isinstance(record, dict):
        raise DatasetError(f"{file}:{number} is not a JSON object; write one JSON object a line")
    turns, text, category = (fields[key] for key in ("turns_field", "text_field", "category_field"))
    if turns and not _is_texts(record.get(turns)):
        raise DatasetError(f"{file}:{number}: field {turns!r} is missing or not a non-empty list of strings; "
                           f"give each record {turns!r}: [\"first user turn\", ...]")
    if text and not (isinstance(record.get(text), str) and record[text]):
        raise DatasetError(f"{file}:{number}: field {text!r} is missing or not a non-empty string; "
                           f"give each record {text!r}: \"the prompt\"")
    if category and not isinstance(record.get(category), str):
        raise DatasetError(f"{file}:{number}: field {category!r} is missing or not a string; "
                           f"give each record {category!r}: \"its category\" or set dataset.category_field=null")
    return 1


def _is_texts(value) -> bool:
    """A non-empty list of non-empty strings."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v for v in value)


def _dataset_records(file: Path, fields: dict) -> list[dict]:
    """The checked file read through `datasets`' JSON loader, as {"turns", "category"} records."""
    import datasets

    try:
        rows = datasets.load_dataset("json", data_files=str(file), split="train")
    except Exception as err:  # pyarrow refuses fields whose type changes between records
        raise DatasetError(f"{file}: datasets cannot read it ({type(err).__name__}); give every record's "
                           "fields the same type on every line") from err
    turns = rows[fields["turns_field"]] if fields["turns_field"] else [[t] for t in rows[fields["text_field"]]]
    categories = rows[fields["category_field"]] if fields["category_field"] else [None] * len(turns)
    return [{"turns": list(t), "category": c} for t, c in zip(turns, categories, strict=True)]


def select_categories(records: list[dict], cfg: Mapping, fields: dict) -> list[dict]:
    """The records of `categories` (null: all), the first `per_category` of each (null: all), in file order."""
    known = list(dict.fromkeys(record["category"] for record in records))
    counts = {category: sum(r["category"] == category for r in records) for category in known}
    chosen = _chosen_categories(cfg, known, fields)
    per_category = _per_category(cfg, {category: counts[category] for category in chosen})
    taken = dict.fromkeys(chosen, 0)
    selected = []
    for record in records:
        category = record["category"]
        if category in taken and (per_category is None or taken[category] < per_category):
            taken[category] += 1
            selected.append(record)
    return selected


def _chosen_categories(cfg: Mapping, known: list, fields: dict) -> list:
    """`dataset.categories` checked against the file's categories; all of them when null."""
    categories = cfg.get("categories")
    if categories is None:
        return known
    if not isinstance(categories, list | tuple) or not categories:
        raise DatasetError(f"{_where(cfg)}: dataset.categories={categories!r} is not a non-empty list; "
                           "write e.g. dataset.categories=[math,coding] or null for all")
    unknown = [category for category in categories if category not in known]
    if unknown:
        raise DatasetError(f"{_where(cfg)}: unknown category {unknown[0]!r} in dataset.categories (field "
                           f"{fields['category_field']!r}); the file has {', '.join(map(str, known))}")
    return list(dict.fromkeys(categories))


def _per_category(cfg: Mapping, counts: dict) -> int | None:
    """`dataset.per_category` checked: null, or a positive int no larger than any chosen category's count."""
    per_category = cfg.get("per_category")
    if per_category is None:
        return None
    if isinstance(per_category, bool) or not isinstance(per_category, int) or per_category <= 0:
        raise DatasetError(f"{_where(cfg)}: dataset.per_category={per_category!r} is not a positive integer; "
                           "set a count >= 1 or null for all")
    for category, count in counts.items():
        if per_category > count:
            raise DatasetError(f"{_where(cfg)}: dataset.per_category={per_category} but category {category!r} "
                               f"has only {count} records; set dataset.per_category<={count} or drop the category")
    return per_category


def read_lines(cfg: Mapping) -> list[str]:
    """The configured text set's raw text lines (DatasetError when it cannot be read)."""
    source = _source(cfg)
    if source == "builtin":
        return list(BUILTIN_PROMPTS)
    if source == "hub":
        return _hub_lines(cfg["hub_name"], cfg["hub_config"], cfg.get("split", "test"), cfg.get("text_field", "text"))
    if source == "local":
        return _local_lines(cfg.get("path"), cfg.get("split", "test"))
    raise DatasetError(f"dataset source {source!r} holds conversations, not text lines; read it with read_records")


def _hub_lines(name: str, config: str, split: str, text_field: str = "text") -> list[str]:
    import datasets

    try:
        return datasets.load_dataset(name, config, split=split)[text_field]
    except Exception as err:  # datasets raises many types for "not reachable / not cached"
        raise DatasetError(
            f"cannot load {name}/{config} from the Hub ({type(err).__name__}); offline, point at a local copy "
            "with dataset=wikitext2_local dataset.path=<folder with test.txt>"
        ) from err


def _local_lines(path: str | None, split: str) -> list[str]:
    import datasets

    folder = Path(path or "")
    file = folder / f"{split}.txt"
    if not path or not file.is_file():
        raise DatasetError(f"dataset file {file} not found; set dataset.path to a folder holding {split}.txt "
                           "(e.g. dataset.path=../shared/data/wikitext-2) or use dataset=builtin")
    return datasets.load_dataset("text", data_files={split: str(file)}, split=split)["text"]
