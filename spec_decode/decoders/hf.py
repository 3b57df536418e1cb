"""transformers' own speculative decoding: assisted generation with our draft."""

from __future__ import annotations

import torch
from transformers import GenerationConfig, PreTrainedModel
from transformers.generation.streamers import BaseStreamer

from spec_decode.decoders.base import Clock, Generation, GenerationStats, StopIds, stop_set, truncate_at_eos
from spec_decode.sampling import GREEDY, Sampling


class _RoundRecorder(BaseStreamer):
    """Streamer that timestamps every batch of tokens `generate` emits (one batch per round)."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.times: list[float] = []
        self.counts: list[int] = []

    def put(self, value: torch.Tensor) -> None:
        self.times.append(self.clock.now())
        self.counts.append(value.numel())

    def end(self) -> None:
        pass


class _ForwardCounter:
    """Counts forward calls of a module through a hook."""

    def __init__(self, module: torch.nn.Module):
        self.calls = 0
        self._handle = module.register_forward_hook(self._count)

    def _count(self, *_) -> None:
        self.calls += 1

    def remove(self) -> None:
        self._handle.remove()


SCHEDULES = ("constant", "heuristic", "heuristic_transient")
ASSISTANT_KNOBS = ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")


class HFAssistedDecoder:
    """`target.generate(assistant_model=draft)`, greedy or sampled; unset knobs take transformers' defaults.

    The knobs are written into the draft's generation config before every call, so the "heuristic"
    schedule (which transformers carries over between calls) restarts from the same value each time.
    """

    name = "hf_assisted"
    sampling: Sampling = GREEDY  # do_sample and its knobs, passed to every `generate` call

    def __init__(self, target: PreTrainedModel, draft: PreTrainedModel, num_assistant_tokens: int | None = None,
                 num_assistant_tokens_schedule: str | None = None,
                 assistant_confidence_threshold: float | None = None):
        self.validate(num_assistant_tokens, num_assistant_tokens_schedule, assistant_confidence_threshold)
        self.target, self.draft = target, draft
        defaults = GenerationConfig._get_default_generation_params()
        given = dict(zip(ASSISTANT_KNOBS, (num_assistant_tokens, num_assistant_tokens_schedule,
                                           assistant_confidence_threshold), strict=True))
        self.knobs = {key: defaults[key] if value is None else value for key, value in given.items()}
        self.clock = Clock(target.device)

    @staticmethod
    def validate(num_assistant_tokens: int | None = None, num_assistant_tokens_schedule: str | None = None,
                 assistant_confidence_threshold: float | None = None) -> None:
        """Raise ValueError for knobs outside their range."""
        if num_assistant_tokens is not None and num_assistant_tokens < 1:
            raise ValueError(f"num_assistant_tokens must be >= 1, got {num_assistant_tokens}")
        if num_assistant_tokens_schedule not in (None, *SCHEDULES):
            raise ValueError(f"num_assistant_tokens_schedule must be one of {SCHEDULES}")
        if assistant_confidence_threshold is not None and not 0 <= assistant_confidence_threshold <= 1:
            raise ValueError(f"assistant_confidence_threshold must be in [0, 1], got {assistant_confidence_threshold}")

    def params(self) -> dict:
        return dict(self.knobs)

    def _generate_kwargs(self) -> dict:
        """What `generate` needs besides the prompt to run this method."""
        self.draft.generation_config.update(**self.knobs)
        return {"assistant_model": self.draft}

    @torch.inference_mode()
    def generate(self, prompt_ids: torch.Tensor | list[int], max_new_tokens: int,
                 eos_token_id: StopIds = None, seed: int = 0) -> Generation:
        """Generation through `generate` (greedy, or sampled per `sampling` from torch's global generator seeded
        `seed`: transformers takes no generator), with per-round statistics from a streamer and forward hooks."""
        prompt = torch.as_tensor(prompt_ids, dtype=torch.long, device=self.target.device).reshape(1, -1)
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        stops = sorted(stop_set(eos_token_id)) or None
        recorder = _RoundRecorder(self.clock)
        counters = [_ForwardCounter(self.target)] + ([_ForwardCounter(self.draft)] if self.draft else [])
        if not self.sampling.greedy:
            torch.manual_seed(seed)
        start = self.clock.now()
        try:
            out = self.target.generate(
                prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_new_tokens, min_new_tokens=0,
                eos_token_id=stops, pad_token_id=stops[0] if stops else 0, streamer=recorder,
                **self.sampling.hf_kwargs(), **self._generate_kwargs(),
            )
        finally:
            for counter in counters:
                counter.remove()
        end = self.clock.now()
        tokens = truncate_at_eos(out[0, prompt.shape[1]:].tolist(), eos_token_id)
        return Generation(tokens, _stats(recorder, start, end, counters))


class HFGreedyDecoder(HFAssistedDecoder):
    """transformers' own `generate` (no assistant; greedy, or sampled per `sampling`): the peers' baseline."""

    name = "hf_greedy"

    def __init__(self, target: PreTrainedModel):
        self.target, self.draft = target, None
        cache = target.generation_config.cache_implementation or "dynamic"
        self.knobs = {"num_beams": 1, "cache_implementation": cache}
        self.clock = Clock(target.device)

    @staticmethod
    def validate() -> None:
        """hf_greedy has no knobs."""

    def _generate_kwargs(self) -> dict:
        return {"num_beams": 1}


class HFLookupDecoder(HFAssistedDecoder):
    """transformers' prompt lookup decoding: n-gram continuations found in the context, no draft model."""

    name = "hf_lookup"

    def __init__(self, target: PreTrainedModel, prompt_lookup_num_tokens: int = 10, max_matching_ngram_size: int = 2):
        self.validate(prompt_lookup_num_tokens, max_matching_ngram_size)
        self.target, self.draft = target, None
        self.knobs = {"prompt_lookup_num_tokens": prompt_lookup_num_tokens,
                      "max_matching_ngram_size": max_matching_ngram_size}
        self.clock = Clock(target.device)

    @staticmethod
    def validate(prompt_lookup_num_tokens: int = 10, max_matching_ngram_size: int = 2) -> None:
        """Raise ValueError for knobs outside their range."""
        if prompt_lookup_num_tokens < 1 or max_matching_ngram_size < 1:
            raise ValueError("prompt_lookup_num_tokens and max_matching_ngram_size must be >= 1")

    def _generate_kwargs(self) -> dict:
        return dict(self.knobs)


def _stats(recorder: _RoundRecorder, start: float, end: float, counters) -> GenerationStats:
    """Per-round statistics from the streamer, whose first put is the prompt and each later put a round.

    Assisted generation has no separate prefill: its first round emits the first token too.
    How many tokens each round drafted is not exposed, so `drafted_per_round` stays empty.
    """
    times, counts = recorder.times[1:], recorder.counts[1:]
    draft_calls = counters[1].calls if len(counters) > 1 else 0
    stats = GenerationStats(target_forwards=counters[0].calls, draft_forwards=draft_calls)
    stats.ttft_s = times[0] - start
    stats.emitted_per_round = counts
    stats.round_times_s = [b - a for a, b in zip([start, *times[:-1]], times, strict=True)]
    stats.accepted_per_round = [n - 1 for n in counts]
    stats.total_s = end - start
    return stats
