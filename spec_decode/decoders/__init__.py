"""Decoding methods behind one interface: `generate(prompt_ids, max_new_tokens, eos_token_id) -> Generation`."""

from __future__ import annotations

from transformers import PreTrainedModel

from spec_decode.decoders.ar import AutoregressiveDecoder
from spec_decode.decoders.base import Decoder, Generation, GenerationStats, NonFiniteLogitsError, Round
from spec_decode.decoders.feature import FeatureLinearDecoder, FeatureTreeDecoder
from spec_decode.decoders.hf import HFAssistedDecoder, HFGreedyDecoder, HFLookupDecoder
from spec_decode.decoders.linear import LinearDecoder
from spec_decode.decoders.recycling import RecyclingDecoder
from spec_decode.decoders.retrieval import RetrievalDecoder
from spec_decode.decoders.tree import TreeDecoder

DECODERS = {cls.name: cls for cls in (AutoregressiveDecoder, LinearDecoder, TreeDecoder, HFAssistedDecoder,
                                      HFGreedyDecoder, HFLookupDecoder, RecyclingDecoder,
                                      RetrievalDecoder, FeatureLinearDecoder, FeatureTreeDecoder)}
DECODERS |= {f"streaming_{name}": DECODERS[name] for name in ("ar", "linear", "tree")}
NEEDS_DRAFT = {"linear", "tree", "hf_assisted", "streaming_linear", "streaming_tree", "eagle", "eagle_tree"}


def build_decoder(name: str, target: PreTrainedModel, draft: PreTrainedModel | None = None, **params):
    """The decoder called `name`, with its knobs given as keyword arguments."""
    _check_name(name, params)
    if name in NEEDS_DRAFT:
        if draft is None:
            raise ValueError(f"method {name!r} needs a draft model")
        return DECODERS[name](target, draft, **params)
    return DECODERS[name](target, **params)


def validate_method(name: str, params: dict) -> None:
    """Check a method's name and knobs before any model is loaded (ValueError / TypeError)."""
    _check_name(name, params)
    params = dict(params)
    budget = params.pop("budget", None)
    if budget not in (None, "fixed") and not (budget == "auto" and "tree" in name):
        raise ValueError(f"budget must be 'fixed' or (tree methods) 'auto', got {budget!r}")
    DECODERS[name].validate(**params)
    if budget == "auto" and (params.get("lookup", 0) or params.get("recycle", 0)):
        raise ValueError("budget: auto cannot be combined with lookup > 0 or recycle > 0: the cost model counts draft "
                         "levels only, so lookup chain nodes would be misbudgeted (recycled ones too); "
                         "use budget: fixed")


def _check_name(name: str, params: dict) -> None:
    """A known method; streaming methods, and only they, get a cache_size."""
    if name not in DECODERS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(DECODERS)}")
    if name.startswith("streaming_") != (params.get("cache_size") is not None):
        raise ValueError(f"method {name!r}: cache_size is for the streaming_* methods, which need it")


__all__ = ["DECODERS", "Decoder", "Generation", "GenerationStats", "NonFiniteLogitsError", "Round", "build_decoder",
           "validate_method"]
