"""The most adaptive retrieval could gain on a run: replay AR's own answers with verify lengths chosen in hindsight.

Usage: python scripts/retrieval_ceiling.py [RESULT.json] [--method retrieval_adaptive] [--ngram 6] [--lookup 10]
                                          [--datastore models/smollm2-draft/responses/chat.npz ...]

At every position of every AR answer in the run, a source proposes a continuation: `context` (the method's own
`retrieve_continuations`: the latest longest match of the suffix in prompt + answer so far), `datastore` (the
longest suffix match, n <= 8, in the given responses, its most frequent continuation, as REST builds its chains),
or `context+datastore` (the context's, else the datastore's). The target accepts the proposal's longest prefix that
AR emitted. Per match length, the verify length that maximises tokens per second in hindsight, with seconds = base
+ per_node x nodes fitted on `--method`'s rounds in the same run, then a replay of the answers under that choice:
an upper bound for any online policy over the same source, to set beside the method's measured speedup.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from spec_decode.bench import split_turns
from spec_decode.costmodel import verify_fit
from spec_decode.data import Prompt, turn_ids
from spec_decode.lookup import retrieve_continuations
from spec_decode.models import load_tokenizer
from spec_decode.results import read_for_script

RESULT = Path("results/spec_bench/smollm2-135m_distilled/result.json")
STORE_NGRAM = 8


class Datastore:
    """Suffix matches in a token corpus: per n, the sorted hashes of every n-gram and where each ends.

    Written by hand: REST's `draftretriever` (on the index, 0.1.1) is a compiled suffix array over its own datastore
    file format; for an offline replay, hashed n-grams in numpy answer the same question without that dependency.
    """

    def __init__(self, paths: list[Path]):
        parts = []
        for path in paths:
            data = np.load(path)
            for answer in np.split(data["tokens"], np.cumsum(data["lengths"])[:-1]):
                parts += [answer.astype(np.int64), np.array([-1])]  # -1: no match crosses two answers
        self.tokens = np.concatenate(parts)
        self.index = {n: self._ngrams(n) for n in range(1, STORE_NGRAM + 1)}

    def _ngrams(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if n > self.tokens.size:
            return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
        ends = np.arange(n - 1, self.tokens.size)
        windows = np.lib.stride_tricks.sliding_window_view(self.tokens, n)
        ends = ends[(windows >= 0).all(1)]
        keys = self._hash(windows[(windows >= 0).all(1)])
        order = np.argsort(keys, kind="stable")
        return keys[order], ends[order]

    @staticmethod
    def _hash(rows: np.ndarray) -> np.ndarray:
        """One 64-bit polynomial hash per row of token ids (wrapping; collisions are negligible at this size)."""
        h = np.zeros(rows.shape[0], dtype=np.uint64)
        with np.errstate(over="ignore"):
            for column in rows.T.astype(np.uint64):
                h = h * np.uint64(1_000_003) + column
        return h

    def propose(self, context: list[int], length: int) -> tuple[int, list[int]]:
        """The longest suffix match's length and its most frequent continuation (greedy down the trie of them)."""
        for n in range(min(STORE_NGRAM, len(context)), 0, -1):
            keys, ends = self.index[n]
            key = self._hash(np.asarray(context[-n:])[None])[0]
            lo, hi = np.searchsorted(keys, key), np.searchsorted(keys, key, side="right")
            if hi > lo:
                return n, self._follow(ends[lo:hi] + 1, length)
        return 0, []

    def _follow(self, starts: np.ndarray, length: int) -> list[int]:
        out = []
        for _ in range(length):
            nxt = self.tokens[np.minimum(starts, self.tokens.size - 1)]
            starts, nxt = starts[nxt >= 0], nxt[nxt >= 0]
            if nxt.size == 0:
                break
            values, counts = np.unique(nxt, return_counts=True)
            out.append(int(values[counts.argmax()]))
            starts = starts[nxt == out[-1]] + 1
        return out


def answers_in_context(result: dict) -> list[tuple[list[int], list[int]]]:
    """(input ids, AR answer) for every turn of every prompt, later turns built as the run built them."""
    tokenizer, chat = load_tokenizer(result["config"]["model"]), bool(result.get("prompting", {}).get("chat"))
    out = []
    for sample in result["methods"]["ar"]["samples"]:
        p = result["prompts"][sample["prompt"]]
        prompt = Prompt(p["text"], p["ids"], p.get("category"), p.get("turns") or [])
        answers = split_turns(sample["tokens"], sample.get("turns") or [len(sample["tokens"])])
        out += [(turn_ids(prompt, tokenizer, chat, answers[:t]), a) for t, a in enumerate(answers)]
    return out


def context_source(ngram: int):
    """The method's own proposal: the continuation of the latest longest suffix match (n <= `ngram`) in the context."""
    def propose(context: list[int], length: int) -> tuple[int, list[int]]:
        tokens, counts, matched = retrieve_continuations(torch.tensor(context), ngram, length, 1)
        return int(matched[0]), tokens[0, : int(counts[0])].tolist()
    return propose


def context_else_store(context, store: Datastore):
    """The context's proposal; the datastore's only where the context has none."""
    def propose(tokens: list[int], length: int) -> tuple[int, list[int]]:
        matched, proposal = context(tokens, length)
        return (matched, proposal) if proposal else store.propose(tokens, length)
    return propose


def accepted_runs(turns, propose, lookup: int) -> list[list[tuple[int, int]]]:
    """Per answer, per position: (match length, tokens of the proposal AR emitted next)."""
    runs = []
    for ids, answer in turns:
        row = []
        for i in range(len(answer)):
            matched, proposal = propose(list(ids) + answer[:i], lookup)
            agree = 0
            while agree < min(len(proposal), len(answer) - i - 1) and proposal[agree] == answer[i + agree]:
                agree += 1
            row.append((matched if proposal else 0, agree))
        runs.append(row)
    return runs


def hindsight_lengths(runs, lookup: int, base: float, per_node: float) -> dict[int, int]:
    """Per match length, the verify length with the most tokens per second over every position."""
    by_match = defaultdict(list)
    for row in runs:
        for matched, agree in row:
            by_match[matched].append(agree)
    best = {}
    for matched, agrees in by_match.items():
        agrees = np.array(agrees)
        rate = [(1 + np.minimum(agrees, m).mean()) / (base + per_node * m) for m in range(lookup + 1)]
        best[matched] = int(np.argmax(rate)) if matched else 0
    return best


def replay(runs, lengths: dict[int, int], base: float, per_node: float) -> tuple[float, float]:
    """Speedup over AR steps of `base` seconds and tokens per round when each round verifies `lengths[match]`."""
    tokens = seconds = rounds = 0
    for row in runs:
        i = 0
        while i < len(row):
            matched, agree = row[i]
            m = lengths.get(matched, 0)
            emitted = min(agree, m) + 1
            tokens, seconds, rounds, i = tokens + emitted, seconds + base + per_node * m, rounds + 1, i + emitted
    return tokens * base / seconds, tokens / rounds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", nargs="?", type=Path, default=RESULT)
    parser.add_argument("--method", default="retrieval_adaptive", help="the run's method whose rounds fit the cost")
    parser.add_argument("--ngram", type=int, default=6)
    parser.add_argument("--lookup", type=int, default=10)
    parser.add_argument("--datastore", type=Path, nargs="*", default=[], help="responses .npz files (tokens, lengths)")
    args = parser.parse_args(argv)
    result = read_for_script(args.result, (args.method,), "; run `make spec-bench` first")
    base, per_node = verify_fit(result["methods"][args.method]["samples"])
    turns = answers_in_context(result)
    sources = {"context": context_source(args.ngram)}
    if args.datastore:
        store = Datastore(args.datastore)
        sources["datastore"] = store.propose
        sources["context+datastore"] = context_else_store(sources["context"], store)
    measured = next(r for r in result["summary"] if r["method"] == args.method)["speedup"]
    print(f"{args.result}: {len(turns)} answers; cost fit on {args.method}'s rounds: {1000 * base:.1f} ms + "
          f"{1000 * per_node:.2f} ms per node; {args.method} measured {measured:.3f}x AR")
    for name, propose in sources.items():
        runs = accepted_runs(turns, propose, args.lookup)
        lengths = hindsight_lengths(runs, args.lookup, base, per_node)
        speedup, per_round = replay(runs, lengths, base, per_node)
        agree = np.mean([a for row in runs for _, a in row])
        print(f"  {name:18s} accepted per position {agree:.2f}; replay {speedup:.3f}x AR, {per_round:.2f} tokens "
              f"per round; hindsight verify length by match length {dict(sorted(lengths.items()))}")


if __name__ == "__main__":
    main()
