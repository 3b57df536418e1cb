"""Greedy or sampled decoding: the processed distribution every method draws from, and the lossless acceptance rules.

The distribution is transformers' own logits warpers (temperature, then top-k, then top-p, as `generate` orders
them), so our methods, the HF peers and both models of a pair see the same processed p and q.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


@dataclass(frozen=True)
class Sampling:
    """temperature 0: greedy (argmax, the default); > 0: sample from softmax(logits / T) cut to top_k and top_p."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut

    def __post_init__(self):
        self.validate(self.temperature, self.top_p, self.top_k)

    @staticmethod
    def validate(temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0) -> None:
        """Raise ValueError for knobs outside their range (top_p / top_k only mean something when sampling)."""
        if isinstance(temperature, bool) or not isinstance(temperature, int | float) or temperature < 0:
            raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
        if isinstance(top_p, bool) or not isinstance(top_p, int | float) or not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0, got {top_k!r}")
        if temperature == 0 and (top_p != 1 or top_k != 0):
            raise ValueError(f"top_p={top_p} / top_k={top_k} apply only when sampling: set temperature > 0")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def params(self) -> dict:
        """The knobs as recorded in results."""
        return {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k}

    def hf_kwargs(self) -> dict:
        """The same decoding for transformers' `generate` (its top_k default of 50 switched off explicitly)."""
        if self.greedy:
            return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        return {"do_sample": True, "temperature": float(self.temperature), "top_p": float(self.top_p),
                "top_k": self.top_k}

    @cached_property
    def _warpers(self) -> LogitsProcessorList:
        warpers = LogitsProcessorList()
        if self.temperature not in (0, 1):
            warpers.append(TemperatureLogitsWarper(float(self.temperature)))
        if self.top_k:
            warpers.append(TopKLogitsWarper(self.top_k))
        if self.top_p < 1:
            warpers.append(TopPLogitsWarper(float(self.top_p)))
        return warpers

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """`logits` (1-D or 2-D) through the warpers, in float32 or wider: -inf where top-k / top-p cut."""
        wide = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
        return self._warpers(None, wide.reshape(-1, wide.shape[-1])).reshape(wide.shape)

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """The processed distribution over the last axis of `logits`."""
        return self.scores(logits).softmax(-1)

    def pick(self, logits: torch.Tensor, uniforms: torch.Tensor | None) -> torch.Tensor:
        """One token per row of `logits`: the argmax when greedy, else the processed distribution's inverse CDF at
        that row's uniform in `uniforms` (same shape as the rows)."""
        if self.greedy:
            return logits.argmax(-1)
        return draw(self.probs(logits), uniforms)


GREEDY = Sampling()


def draw(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Per row of non-negative `weights` (need not sum to 1), the index where its CDF first exceeds the row's uniform.

    Inverse-CDF sampling rather than `torch.multinomial`: a token is then a function of its context and one uniform,
    so decoders that draw position i's token from the same uniform emit the same text (tests compare tokens).
    The CDF is summed in float64 so that no token's probability is rounded away over a large vocabulary.
    """
    cdf = weights.cumsum(-1, dtype=torch.float64)
    point = uniforms.double()[..., None] * cdf[..., -1:]
    return torch.searchsorted(cdf, point, right=True).clamp_max_(weights.shape[-1] - 1)[..., 0]


def accept_drafts(p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor,
                  uniforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Speculative sampling (Leviathan et al. 2023; Chen et al. 2023) of a chain of K drafts, on the device.

    `p` (K+1, V): the target's processed distributions after each prefix; `q` (K, V): the draft's, from which
    `drafts` (K,) were drawn. Draft i is accepted when uniforms[i] < p(x)/q(x) (probability min(1, p(x)/q(x)))
    while all before it were; at the first rejection the next token is drawn (at uniforms[K]) from
    normalise(max(0, p - q)), and after K acceptances from p (a zero row of q). Returns (accepted count, the
    token after the accepted drafts): the emitted tokens are distributed exactly as the target's.
    """
    k = drafts.numel()
    p_x = p[:k].gather(1, drafts[:, None])[:, 0]
    q_x = q.gather(1, drafts[:, None])[:, 0]
    accepted = (uniforms[:k] * q_x < p_x).cumprod(0).sum()  # u < p/q without a division by a zero q
    at = accepted[None]
    q_rows = torch.cat([q, q.new_zeros(1, q.shape[1])])
    residual = (p.index_select(0, at) - q_rows.index_select(0, at)).clamp_min_(0)[0]
    residual = torch.where(residual.sum() > 0, residual, p.index_select(0, at)[0])  # p == q there: never rejected
    return accepted, draw(residual, uniforms[k])
