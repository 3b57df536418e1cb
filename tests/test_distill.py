"""The draft-distillation script: WikiText detokenisation, chat prompts, shards, committed responses, agreement."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("distill_draft", ROOT / "scripts" / "distill_draft.py")
distill = importlib.util.module_from_spec(spec)
sys.modules["distill_draft"] = distill
spec.loader.exec_module(distill)


def test_detokenize_undoes_wikitext_tokenisation():
    raw = "The M @-@ 82 road , built in 1 @,@ 200 days ( <unk> ) , isn 't long ."
    assert distill.detokenize(raw) == "The M-82 road, built in 1,200 days (), isn't long."


def test_article_titles_skip_sections_and_unknown_words(tmp_path):
    path = tmp_path / "valid.txt"
    path.write_text(" = Homarus gammarus = \n = = Description = = \n text line \n = Frank <unk> = \n = M @-@ 82 = \n")
    assert distill.article_titles(path) == ["Homarus gammarus", "M-82"]


def test_first_sentence_needs_eight_words():
    text = "Too short. This sentence has well over eight words in it. Another one."
    assert distill.first_sentence(text) == "This sentence has well over eight words in it."


def test_linear_rounds_counts_the_bonus_token():
    assert distill.linear_rounds([True, True, False, True], k=4) == (2, 4)  # accept 2 + bonus, then accept 1
    assert distill.linear_rounds([False] * 3, k=2) == (3, 3)


def test_load_split_keeps_categories(tmp_path):
    shard = {"prompts": [[1, 2], [3]], "continuations": [[4], [5, 6]], "categories": ["qa", "rag"],
             "topk_values": [torch.zeros(1, 2), torch.zeros(2, 2)],
             "topk_indices": [torch.zeros(1, 2, dtype=torch.int32), torch.zeros(2, 2, dtype=torch.int32)]}
    torch.save(shard, tmp_path / "shard_00000.pt")
    examples = distill.load_split(tmp_path)
    assert [e["category"] for e in examples] == ["qa", "rag"]
    assert [e["start"] for e in examples] == [1, 0]
    assert examples[1]["ids"].tolist() == [3, 5, 6]


@pytest.mark.skipif(not distill.SPEC_BENCH.exists(), reason="../shared/data/spec_bench absent")
def test_spec_bench_prompts_take_the_first_of_each_category():
    prompts, categories = distill.spec_bench_prompts(CharTokenizer(), per_category=2)
    assert len(categories) == 2 * len(set(categories)) == 26
    assert all(categories.count(c) == 2 for c in categories)


class CharTokenizer:  # chat template and tokenizer stand-ins: one id per character of the user turn
    def apply_chat_template(self, messages, **kwargs):
        return messages[-1]["content"]

    def __call__(self, text, add_special_tokens):
        return {"input_ids": [ord(c) for c in text]}


def test_request_topics_pair_sections_with_their_article(tmp_path):
    path = tmp_path / "valid.txt"
    path.write_text(" = Homarus gammarus = \n = = Life cycle = = \n text \n = Frank <unk> = \n = = Career = = \n"
                    " = M @-@ 82 = \n = = Route <unk> = = \n = = History = = \n")
    assert distill.request_topics(path) == ["Homarus gammarus", "Homarus gammarus (life cycle)", "M-82",
                                            "M-82 (history)"]


def test_request_prompts_fill_every_template_with_valid_topics(tmp_path):
    passage = " ".join(["word"] * 50)
    (tmp_path / "valid.txt").write_text(f" = Homarus gammarus = \n = = Ecology = = \n {passage} \n")
    args = distill.parse_args(["--wikitext", str(tmp_path), "generate", "--split", "requests", "--requests", "40"])
    texts = ["".join(map(chr, ids)) for ids in distill.request_prompts(None, CharTokenizer(), args)]
    assert len(texts) == 40 and len(set(texts)) > len(distill.REQUEST_TEMPLATES)
    assert all("Homarus gammarus" in t or passage in t for t in texts)
    assert not any("{" in t for t in texts)


class ScriptedModel:  # generate() appends fixed rows: one ended turn, one cut off, one ended but too short
    def __init__(self, rows):
        self.rows = rows

    def generate(self, input_ids, attention_mask, **kwargs):
        rows, self.rows = self.rows[: len(input_ids)], self.rows[len(input_ids) :]
        return torch.cat([input_ids, torch.tensor(rows)], dim=1)


def chat_byte_tokenizer():
    from spec_decode.models import byte_tokenizer

    tokenizer = byte_tokenizer()
    tokenizer.chat_template = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token }}{% endfor %}"
                               "{% if add_generation_prompt %}<assistant>{% endif %}")
    return tokenizer


def test_sampled_user_turns_keep_the_opener_and_drop_unfinished_or_short_turns():
    tokenizer = chat_byte_tokenizer()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id

    def row(text, end):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + ([eos] if end else [])
        return ids + [pad] * (24 - len(ids))  # a turn that does not end fills every step

    rows = [row(" a poem about the sea.", True), row(" a poem that never ends.", False), row(" it", True)]
    args = distill.parse_args(["generate", "--split", "magpie", "--batch", "2", "--turn-tokens", "24"])
    turns = distill.sampled_user_turns(ScriptedModel(rows), tokenizer, ["Write", "Write", "Do"], args)
    assert turns == ["Write a poem about the sea.", "", ""]
    prefix = tokenizer.decode(distill.user_turn_prefix(tokenizer, "Write"))
    assert prefix == "<user>Write"


def test_magpie_prompts_are_cached_and_reused(tmp_path, monkeypatch):
    tokenizer = chat_byte_tokenizer()
    args = distill.parse_args(["--data-dir", str(tmp_path), "--responses", str(tmp_path / "none"), "generate",
                               "--split", "magpie", "--magpie", "30"])
    seen = []
    monkeypatch.setattr(distill, "sampled_user_turns", lambda m, t, starts, a: seen.append(starts) or
                        [f"{s} request {i}".strip() if i % 3 else "" for i, s in enumerate(starts)])
    first = distill.magpie_prompts(None, tokenizer, args)
    assert len(seen) == 1 and seen[0][: len(distill.MAGPIE_STARTS)] == list(distill.MAGPIE_STARTS)
    assert len(first) == 20  # the empty (dropped) turns are not prompts
    assert distill.magpie_prompts(None, tokenizer, args) == first and len(seen) == 1  # read back, not resampled
    texts = [tokenizer.decode(ids) for ids in first]
    assert all(t.startswith("<user>") and t.endswith("<assistant>") for t in texts)


@pytest.fixture(scope="module")
def tiny_target():
    from spec_decode.models import tiny_pair

    pair = tiny_pair("llama", seed=1, dtype=torch.float64)
    return pair.target, pair.tokenizer


def test_teacher_forced_shard_matches_generation(tiny_target):
    model, tokenizer = tiny_target
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    generated = distill.generate_shard(model, tokenizer, prompts, new_tokens=6, k=4)
    rebuilt = distill.teacher_forced_shard(model, tokenizer.pad_token_id, prompts, generated["continuations"], k=4)
    for name in ("topk_indices", "topk_values"):
        for a, b in zip(generated[name], rebuilt[name], strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype
            assert torch.allclose(a.double(), b.double(), atol=1e-2)


def test_feature_shards_hold_the_target_states_and_batches_shift_them_by_one(tiny_target, tmp_path):
    """A rebuilt shard keeps the target's last hidden state at every fed position; a batch feeds position t the
    state at t - 1 (zeros at 0), regresses on the states at the scored positions, and trains the feature path."""
    model, tokenizer = tiny_target
    prompts, continuations = [[5, 6, 7, 8, 9], [10, 11]], [[20, 21, 22], [23, 24, 25, 26]]
    shard = distill.teacher_forced_shard(model, tokenizer.pad_token_id, prompts, continuations, k=2)
    for p, c, f in zip(prompts, continuations, shard["features"], strict=True):
        expected = model(torch.tensor([p + c[:-1]]), output_hidden_states=True).hidden_states[-1][0]
        torch.testing.assert_close(f.double(), expected, atol=2e-2, rtol=1e-2)  # stored in float16
    (tmp_path / "split").mkdir()
    torch.save(shard, tmp_path / "split" / "shard_00000.pt")
    examples = distill.load_split(tmp_path / "split")
    batch = distill.collate(examples, torch.arange(model.config.vocab_size))
    for row, e in enumerate(examples):
        n = len(e["ids"]) - 1
        assert not batch["features"][row, 0].any()
        assert torch.equal(batch["features"][row, 1:n], e["features"][:-1].float())
    assert len(batch["feature_targets"]) == len(batch["targets"]) == 7
    from spec_decode.models import tiny_feature_draft

    draft = tiny_feature_draft(model, "llama").float()
    args = distill.parse_args(["train", "--feature", "--noise", "0"])
    one_pass = distill.train_loss(draft, batch, args)
    one_pass.backward()
    assert draft.fc.weight.grad[:, model.config.hidden_size :].abs().sum() > 0
    unrolled = distill.train_loss(draft, batch, distill.parse_args(["train", "--feature", "--noise", "0", "--unroll"]))
    assert unrolled > one_pass  # the second pass, reading the draft's own states, adds its loss


def test_generated_and_rebuilt_shards_mix_for_a_plain_draft_only(tiny_target, tmp_path, monkeypatch):
    """A generated shard has no target states: batches mixing it with a rebuilt one carry none (a plain draft trains
    on them), and `train --feature` refuses such splits with one line."""
    model, tokenizer = tiny_target
    prompts = [[5, 6, 7, 8, 9], [10, 11]]
    generated = distill.generate_shard(model, tokenizer, prompts, new_tokens=4, k=2)
    rebuilt = distill.teacher_forced_shard(model, tokenizer.pad_token_id, prompts, generated["continuations"], k=2)
    for name, shard in (("generated", generated), ("rebuilt", rebuilt)):
        (tmp_path / name).mkdir()
        torch.save(shard, tmp_path / name / "shard_00000.pt")
    mixed = distill.load_split(tmp_path / "rebuilt") + distill.load_split(tmp_path / "generated")
    batch = distill.collate(mixed, torch.arange(model.config.vocab_size))
    assert "features" not in batch and len(batch["targets"]) == 16
    monkeypatch.setattr(distill, "load_target", lambda spec: tiny_target)
    argv = ["--data-dir", str(tmp_path), "train", "--feature", "--splits", "generated", "rebuilt", "--val-prompts", "1"]
    with pytest.raises(SystemExit, match="needs the target's states"):
        distill.main(argv)


def test_generate_reuses_committed_responses(tiny_target, tmp_path, monkeypatch):
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14], [15]]
    monkeypatch.setattr(distill, "load_target", lambda spec: tiny_target)
    monkeypatch.setattr(distill, "split_prompts", lambda model, tokenizer, args: (prompts, None))
    argv = ["--data-dir", str(tmp_path / "cache"), "--responses", str(tmp_path / "committed"), "--target", "tiny"]
    distill.main([*argv, "generate", "--split", "test", "--batch", "3", "--new-tokens", "5", "--k", "2"])
    generated = distill.load_split(tmp_path / "cache" / "test")
    distill.main([*argv, "export", "--splits", "test"])
    for shard in (tmp_path / "cache" / "test").glob("shard_*.pt"):  # a new machine: the cache is gone
        shard.unlink()

    def no_generation(*args, **kwargs):
        raise AssertionError("committed responses should have been reused")

    monkeypatch.setattr(distill, "generate_shard", no_generation)
    distill.main([*argv, "generate", "--split", "test", "--batch", "3", "--new-tokens", "5", "--k", "2"])
    rebuilt = distill.load_split(tmp_path / "cache" / "test")
    assert [e["ids"].tolist() for e in rebuilt] == [e["ids"].tolist() for e in generated]
    assert [e["indices"].tolist() for e in rebuilt] == [e["indices"].tolist() for e in generated]


def test_committed_responses_need_the_same_target_and_prompts(tmp_path):
    folder = tmp_path / "split"
    folder.mkdir()
    shard = {"prompts": [[1, 2]], "continuations": [[3, 4, 5]]}
    torch.save(shard, folder / "shard_00000.pt")
    assert distill.export_responses(folder, tmp_path / "r.npz", "gguf:a/b") == 3
    digest = distill.prompts_digest([[1, 2]])
    assert distill.committed_responses(tmp_path / "r.npz", "gguf:a/b") == {digest: [[3, 4, 5]]}
    assert distill.committed_responses(tmp_path / "r.npz", "another") == {}
    assert distill.committed_responses(tmp_path / "absent.npz", "gguf:a/b") == {}
