"""The benchmark protocol: one pair, the same prompts, AR first, warm-up then timed repeats per method."""

from __future__ import annotations

import gc
import resource
from dataclasses import dataclass

import psutil
import torch
from tqdm.auto import tqdm

from spec_decode.data import Prompt
from spec_decode.decoders import build_decoder
from spec_decode.models import ModelPair


@dataclass
class Protocol:
    """How much to generate and how often."""

    max_new_tokens: int = 128
    warmup: int = 10
    repeats: int = 3
    seed: int = 0
    profile: bool = False
    trace_rounds: int = 0


def run_method(pair: ModelPair, name: str, params: dict, prompts: list[Prompt], protocol: Protocol,
               reference: dict[int, list[int]] | None = None) -> dict:
    """Warm up, then time `repeats` generations per prompt; raw samples plus memory and the knobs used."""
    decoder = build_decoder(name, pair.target, pair.draft, **params)
    decoder.profile = protocol.profile
    decoder.trace_rounds = protocol.trace_rounds
    eos = pair.eos_token_id
    _reset_memory(pair.target.device)
    for i in tqdm(range(protocol.warmup), desc=f"{name} warm-up", leave=False):
        decoder.generate(prompts[i % len(prompts)].ids, protocol.max_new_tokens, eos)
    samples = []
    bar = tqdm(total=len(prompts) * protocol.repeats, desc=f"{name} timed", leave=False)
    for p, prompt in enumerate(prompts):
        for r in range(protocol.repeats):
            torch.manual_seed(protocol.seed + r)
            out = decoder.generate(prompt.ids, protocol.max_new_tokens, eos)
            samples.append(_sample(p, r, out, None if reference is None else reference[p]))
            bar.update()
    bar.close()
    return {"method": name, "params": decoder.params(), "samples": samples,
            "memory": _memory(pair.target.device)}


def _sample(prompt_index: int, repeat: int, out, reference: list[int] | None) -> dict:
    stats = out.stats.to_dict()
    return {"prompt": prompt_index, "repeat": repeat, "new_tokens": len(out.tokens), "seconds": stats.pop("total_s"),
            "ttft_s": stats.pop("ttft_s"), "tokens": out.tokens,
            "exact_match": None if reference is None else exact_match(out.tokens, reference), **stats}


def exact_match(tokens: list[int], reference: list[int]) -> float:
    """Fraction of positions (over the longer output) where the tokens equal the reference's."""
    longest = max(len(tokens), len(reference), 1)
    return sum(a == b for a, b in zip(tokens, reference, strict=False)) / longest


def _reset_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _memory(device: torch.device) -> dict:
    """Peak CUDA memory since the method started; on CPU the process RSS now and its lifetime peak."""
    if device.type == "cuda":
        return {"kind": "cuda", "peak_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20,
                "peak_reserved_mb": torch.cuda.max_memory_reserved(device) / 2**20}
    return {"kind": "cpu_rss", "rss_mb": psutil.Process().memory_info().rss / 2**20,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10}
