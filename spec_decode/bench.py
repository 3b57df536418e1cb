"""The benchmark protocol: one pair, the same prompts, AR first, warm-up then timed repeats per method."""

from __future__ import annotations

import gc
import resource
from dataclasses import dataclass

import psutil
import torch
from tqdm.auto import tqdm

from spec_decode import costmodel
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
    params, calibration = dict(params), None
    if params.pop("budget", "fixed") == "auto":
        calibration = calibrate_budget(pair, name, params, prompts, protocol)
        params |= {"depth": calibration["choice"]["depth"], "max_nodes": calibration["choice"]["max_nodes"]}
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
    run = {"method": name, "params": decoder.params(), "samples": samples, "memory": _memory(pair.target.device)}
    if calibration:
        measured = sum(s["new_tokens"] - 1 for s in samples) / sum(s["seconds"] - s["ttft_s"] for s in samples)
        calibration["measured_decode_tokens_per_s"] = measured
        calibration["prediction_error"] = calibration["choice"]["tokens_per_s"] / measured - 1
        run["calibration"] = calibration
    return run


CALIBRATION_DEPTHS = range(1, 13)
CALIBRATION_CAPS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128)


def calibrate_budget(pair: ModelPair, name: str, params: dict, prompts: list[Prompt], protocol: Protocol) -> dict:
    """Profile a large tree on the first prompts, fit the cost model, and pick (depth, max_nodes) from it.

    The user's depth and max_nodes are the largest budget considered.
    """
    probe = build_decoder(name, pair.target, pair.draft, **params)
    probe.profile, probe.trace_rounds = True, 10**9
    samples = [probe.generate(p.ids, protocol.max_new_tokens, pair.eos_token_id).stats.to_dict()
               for p in tqdm(prompts[:3], desc=f"{name} budget calibration", leave=False)]
    model = costmodel.fit(samples)
    traces = [t for s in samples for t in s["trace"]]
    depths = [d for d in CALIBRATION_DEPTHS if d <= params["depth"]]
    caps = [c for c in CALIBRATION_CAPS if c <= params["max_nodes"]] or [params["max_nodes"]]
    choice = costmodel.choose_budget(model, traces, depths, caps)
    return {"cost_model": model.to_dict(), "choice": choice, "rounds": len(traces),
            "probe": {"depth": params["depth"], "max_nodes": params["max_nodes"]}}


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
