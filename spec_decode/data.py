"""Prompt sets: WikiText-2 through `datasets` (Hub or a local copy), or a built-in set needing no data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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


class DatasetError(RuntimeError):
    """A prompt set could not be loaded; the message says how to provide it."""


@dataclass
class Prompt:
    """One benchmark prompt: its text and its token ids under the pair's tokenizer."""

    text: str
    ids: list[int]


def load_prompts(cfg: Mapping, tokenizer, num_prompts: int, lines: list[str] | None = None) -> list[Prompt]:
    """The first `num_prompts` prompts of the configured set (or of its `lines`, read before), cut to
    `min_tokens`..`max_tokens` tokens."""
    lines = read_lines(cfg) if lines is None else lines
    prompts = cut_prompts(lines, tokenizer, cfg.get("min_tokens", 20), cfg.get("max_tokens", 100), num_prompts)
    if len(prompts) < num_prompts:
        raise DatasetError(f"dataset {cfg.get('name')!r} gave only {len(prompts)} prompts of "
                           f"{cfg.get('min_tokens')}-{cfg.get('max_tokens')} tokens; {num_prompts} were asked for")
    return prompts


def cut_prompts(lines, tokenizer, min_tokens: int, max_tokens: int, count: int) -> list[Prompt]:
    """Article lines in order (headings and blank lines skipped), each cut to its first `max_tokens` tokens."""
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


def read_lines(cfg: Mapping) -> list[str]:
    """The configured set's raw text lines (DatasetError when it cannot be read)."""
    source = cfg.get("source", "builtin")
    if source == "builtin":
        return list(BUILTIN_PROMPTS)
    if source == "hub":
        return _hub_lines(cfg["hub_name"], cfg["hub_config"], cfg.get("split", "test"), cfg.get("text_field", "text"))
    if source == "local":
        return _local_lines(cfg.get("path"), cfg.get("split", "test"))
    raise DatasetError(f"unknown dataset source {source!r}; use builtin, hub or local")


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
