"""Load a (target, draft, tokenizer) pair from a model config: the Hub, a packaged GGUF, or in-process random models."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AttentionInterface,
    AutoModelForCausalLM,
    AutoTokenizer,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
# Attention backends that add an arbitrary 4D float mask (tree, streaming window) to the scores as is. Refused for
# the masked methods: flash_attention_2/3/4 read a mask as a 2-D padding mask; the paged backends expect continuous
# batching's paged cache and mask layout; Hub kernels are flash kernels; flex_attention indexes a 4D tensor as a
# score_mod inside its compiled blocks and failed on our tree masks (index out of bounds, CPU, torch 2.13).
SHARED_KV_SDPA = "sdpa_gqa"
MASK_BACKENDS = ("eager", "sdpa", SHARED_KV_SDPA)
DEFAULT_ATTENTION = "sdpa"
FEATURE_METHODS = frozenset({"eagle", "eagle_tree"})  # methods whose draft reads the target's hidden states
TINY_EOS = "<|endoftext|>"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class ModelLoadError(RuntimeError):
    """A model pair could not be loaded; the message says why and what to do."""


@dataclass
class ModelPair:
    """A target model, its draft, their shared tokenizer, and how they were obtained."""

    target: PreTrainedModel
    draft: PreTrainedModel
    tokenizer: Any
    info: dict = field(default_factory=dict)
    feature_draft: PreTrainedModel | None = None  # an EAGLE-style draft (method eagle), where the config names one
    other_drafts: dict[str, PreTrainedModel] = field(default_factory=dict)  # folder -> a draft some method names

    def draft_for(self, method: str, folder: str | None = None) -> PreTrainedModel | None:
        """The draft `method` runs with: the one loaded from `folder` when a method entry names one (`draft:`), the
        feature draft for methods that read the target's states, else `draft`."""
        if folder is not None:
            return self.other_drafts[folder]
        if method not in FEATURE_METHODS:
            return self.draft
        if self.feature_draft is None:
            raise ModelLoadError(f"method {method!r} needs a feature draft: set model.feature_draft to a folder "
                                 "written by scripts/distill_draft.py train --feature")
        return self.feature_draft

    @property
    def models(self) -> list[PreTrainedModel]:
        """Every model of the pair (target, draft, and the feature draft when there is one)."""
        return [m for m in (self.target, self.draft, self.feature_draft, *self.other_drafts.values()) if m is not None]

    @property
    def eos_token_id(self) -> int | None:
        return self.tokenizer.eos_token_id


def load_pair(cfg: Mapping, other_drafts: Iterable[str] = ()) -> ModelPair:
    """Build the pair a model config describes (`source: tiny | random | hub | gguf`), on its pinned attention, with
    the drafts of `other_drafts` (folders some method entries name as their `draft:`) loaded beside its own."""
    dtype = _dtype(cfg.get("dtype", "float32"))
    device = _device(cfg.get("device", "cpu"))
    source = cfg.get("source", "hub")
    attention = attention_backend(cfg)
    try:
        pair = _build(source, cfg, dtype, device, attention)
        pair.other_drafts = {folder: _other_draft(source, folder, pair.target, dtype, attention)
                             for folder in other_drafts}
    except (ValueError, ImportError) as err:  # transformers refusing a backend or a size
        raise ModelLoadError(f"cannot build the {source} pair with attn_implementation={attention}: "
                             f"{str(err).splitlines()[0]}") from err
    weight_left = weight_left_gemm(cfg)
    for model in pair.models:
        model.to(device).eval()
        _pin_attention(model, attention)
        if weight_left:
            use_weight_left_gemm(model)
    pair.info |= {"name": cfg.get("name", source), "dtype": str(dtype).removeprefix("torch."),
                  "weight_left_gemm": weight_left,
                  "device": str(device), "attn_implementation": attention, "target_parameters": _count(pair.target),
                  "draft_parameters": _count(pair.draft)}
    if pair.feature_draft is not None:
        pair.info["feature_draft_parameters"] = _count(pair.feature_draft)
    if pair.other_drafts:
        pair.info["other_drafts"] = {folder: {"parameters": _count(model)}
                                     for folder, model in pair.other_drafts.items()}
    return pair


def _other_draft(source: str, folder: str, target: PreTrainedModel, dtype: torch.dtype,
                 attention: str) -> PreTrainedModel:
    """A second draft for the same target, loaded from `folder` as the pair's own draft is."""
    if source == "gguf":
        from spec_decode import offline

        return offline.load_draft(_draft_path(folder), target, dtype=dtype)
    if source == "hub":
        try:
            return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation=attention)
        except OSError as err:
            raise ModelLoadError(f"cannot load the draft {folder!r}: {str(err).splitlines()[0]}") from err
    raise ModelLoadError(f"a method's draft: {folder!r} needs a pair loaded from files (model.source gguf or hub), "
                         f"not {source!r}")


def _build(source: str, cfg: Mapping, dtype: torch.dtype, device: torch.device, attention: str) -> ModelPair:
    if source == "tiny":
        return tiny_pair(cfg.get("arch", "gpt_neox"), cfg.get("seed", 0), dtype, attn_implementation=attention)
    if source == "random":
        return random_pair(cfg, dtype, device, attention)
    if source == "hub":
        return _hub_pair(cfg["target"], cfg["draft"], cfg.get("tokenizer") or cfg["target"], dtype, attention,
                         trust_remote_code=cfg.get("trust_remote_code", False))
    if source == "gguf":
        return _gguf_pair(cfg["package"], cfg["gguf_file"], cfg["draft"], dtype, cfg.get("feature_draft"))
    raise ModelLoadError(f"unknown model source {source!r}; use 'tiny', 'random', 'hub' or 'gguf'")


def attention_backend(model_cfg: Mapping) -> str:
    """The model config's `attn_implementation` (default sdpa), checked to be a name."""
    name = model_cfg.get("attn_implementation") or DEFAULT_ATTENTION
    if not isinstance(name, str):
        raise ModelLoadError(f"model.attn_implementation must be a backend name such as 'sdpa', got {name!r}")
    return name


def weight_left_gemm(model_cfg: Mapping) -> bool:
    """The model config's `weight_left_gemm` (default false), checked to be a boolean."""
    value = model_cfg.get("weight_left_gemm", False)
    if not isinstance(value, bool):
        raise ModelLoadError(f"model.weight_left_gemm must be true or false, got {value!r}")
    return value


class WeightLeftLinear(torch.nn.Linear):
    """`nn.Linear` computing W @ xᵀ, a single row padded to two columns; the same weights and state dict.

    Written by hand because no library switch does it: MKL on the 2-core AMD EPYC runs the default target's linears
    for 2-4 rows as x @ Wᵀ in 46-60 ms, as W @ xᵀ in 15-21 ms, and one row (a GEMV either way) in 36 ms but as a
    two-column W @ xᵀ in 17 ms (`scripts/gemm_layout.py`). Padding the single row keeps AR as fast as the layout
    allows, so speedups against it stay honest.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        padded = rows.shape[0] == 1
        if padded:  # a zero column: its output is discarded
            rows = F.pad(rows, (0, 0, 0, 1))
        out = self.weight.mm(rows.t()).t()  # a transposed view: made contiguous, as later kernels expect
        out = (out[:1] if padded else out).contiguous()
        out = out if self.bias is None else out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


def sdpa_gqa_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                       is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention with grouped-query heads sharing K/V inside the kernel (`enable_gqa`) always.

    Written by hand because transformers' `sdpa` copies K/V once per query head (`repeat_kv`) for a masked
    multi-token query on CPU, the shape of every verification, and packs a single query (AR) into fewer heads: at a
    1,200-token context the default target's forward of 1 / 4 / 16 tokens took 46 / 80 / 132 ms under `sdpa` and
    41 / 59 / 113 ms with the kernel's own grouping (one interleaved run, 2-core AMD EPYC). Registered as the
    backend `sdpa_gqa`. For CPUs: on CUDA, SDPA's fused kernels take `enable_gqa` only without a mask (so
    transformers says), so masked verification there would fall to the math kernel.
    """
    causal = query.shape[2] > 1 and attention_mask is None and (getattr(module, "is_causal", True)
                                                                if is_causal is None else is_causal)
    if causal and key.shape[2] > query.shape[2]:  # prefill into an empty static cache, as transformers' sdpa does
        key, value = key[:, :, : query.shape[2]], value[:, :, : query.shape[2]]
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling,
                                         is_causal=causal, enable_gqa=query.shape[1] != key.shape[1])
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(SHARED_KV_SDPA, sdpa_gqa_attention)
AttentionMaskInterface.register(SHARED_KV_SDPA, sdpa_mask)


def use_weight_left_gemm(model: torch.nn.Module) -> None:
    """Make every plain `nn.Linear` of `model` a `WeightLeftLinear` in place (weights untouched)."""
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.__class__ = WeightLeftLinear


def check_attention(model_cfg: Mapping, method_names) -> None:
    """Refuse, before any model loads, a backend that cannot take the 4D masks of tree and streaming methods."""
    backend = attention_backend(model_cfg)
    masked = sorted({n for n in method_names if "tree" in n or n.startswith("streaming_")})
    if masked and backend not in MASK_BACKENDS:
        raise ModelLoadError(f"model.attn_implementation={backend} cannot take the arbitrary 4D attention mask that "
                             f"{', '.join(masked)} feed(s) the models; use one of {', '.join(MASK_BACKENDS)}")


def _pin_attention(model: PreTrainedModel, backend: str) -> None:
    """Set the model's attention backend, or say in one line why it cannot be used here."""
    try:
        model.set_attn_implementation(backend)
    except (ValueError, ImportError) as err:
        raise ModelLoadError(f"attention backend {backend!r} unavailable: {str(err).splitlines()[0]}") from err
    if model.config._attn_implementation != backend:
        raise ModelLoadError(f"{type(model).__name__} cannot switch its attention backend to {backend!r}")


def load_tokenizer(cfg: Mapping):
    """Only the tokenizer a model config describes (to read the prompts before the models; for reports)."""
    source = cfg.get("source", "hub")
    if source in ("tiny", "random"):
        return byte_tokenizer()
    if source == "gguf":
        from spec_decode import offline

        try:
            return AutoTokenizer.from_pretrained(offline.gguf_folder(cfg["package"]), gguf_file=cfg["gguf_file"])
        except FileNotFoundError as err:
            raise ModelLoadError(str(err)) from err
    name = cfg.get("tokenizer") or cfg["target"]
    try:
        with _refusing_custom_code(repr(name)):
            return AutoTokenizer.from_pretrained(name, trust_remote_code=cfg.get("trust_remote_code", False))
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot load tokenizer {name!r}: {str(err).splitlines()[0]} "
                             "(no network? download it once with network access, or choose model=tiny)") from err


def _hub_pair(target: str, draft: str, tokenizer: str, dtype: torch.dtype, attention: str,
              trust_remote_code: bool = False) -> ModelPair:
    """Pretrained models from the Hub (or its local cache when offline); custom model code only when trusted."""
    trust = {"trust_remote_code": trust_remote_code}
    try:
        with _refusing_custom_code(f"{target!r} / {draft!r}"):
            tok = AutoTokenizer.from_pretrained(tokenizer, **trust)
            target_model = AutoModelForCausalLM.from_pretrained(target, dtype=dtype, attn_implementation=attention,
                                                                **trust)
            draft_model = AutoModelForCausalLM.from_pretrained(draft, dtype=dtype, attn_implementation=attention,
                                                               **trust)
    except OSError as err:
        raise ModelLoadError(
            f"cannot load {target!r} / {draft!r}: {str(err).splitlines()[0]} "
            "(no network? download them once with network access, or choose model=tiny)"
        ) from err
    return ModelPair(target_model, draft_model, tok, {"source": "hub", "target": target, "draft": draft})


@contextmanager
def _refusing_custom_code(what: str):
    """Turn transformers' "needs trust_remote_code" refusal into one clear ModelLoadError."""
    try:
        yield
    except ValueError as err:
        if "trust_remote_code" not in str(err):
            raise
        raise ModelLoadError(f"{what} needs Python code from the model repository, which is not run by default; "
                             "if you trust that repository, set model.trust_remote_code=true") from err


def _gguf_pair(package: str, gguf_file: str, draft: str, dtype: torch.dtype,
               feature_draft: str | None = None) -> ModelPair:
    """A GGUF target shipped in a Python package (dequantised, cached), the project's distilled draft, and its
    feature draft when named."""
    from spec_decode import offline

    paths = [_draft_path(d) for d in (draft, feature_draft) if d]
    try:
        target, tokenizer = offline.load_gguf_target(package, gguf_file, dtype=dtype)
    except FileNotFoundError as err:
        raise ModelLoadError(str(err)) from err
    drafts = [offline.load_draft(path, target, dtype=dtype) for path in paths]
    info = {"source": "gguf", "target": f"{package}/{gguf_file}", "draft": str(draft)}
    if feature_draft:
        info["feature_draft"] = str(feature_draft)
    return ModelPair(target, drafts[0], tokenizer, info, drafts[1] if feature_draft else None)


def _draft_path(draft: str) -> Path:
    """A draft folder (relative: to the project root), checked to hold a saved model."""
    path = Path(draft) if Path(draft).is_absolute() else PROJECT_ROOT / draft
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"draft weights not found at {path}; make them with scripts/distill_draft.py")
    return path


def tiny_pair(arch: str = "gpt_neox", seed: int = 0, dtype: torch.dtype = torch.float32,
              attn_implementation: str = DEFAULT_ATTENTION) -> ModelPair:
    """Small random models built in-process from `seed`; the draft is the target's first layer.

    The target's later layers are damped so that the draft agrees with it often enough to exercise
    long accepted paths, while still disagreeing regularly.
    """
    tokenizer = byte_tokenizer()
    config = _tiny_config(arch, vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                          attn_implementation=attn_implementation)
    model_class = {"gpt_neox": GPTNeoXForCausalLM, "llama": LlamaForCausalLM}[arch]
    torch.manual_seed(seed)
    target = model_class(config)
    _damp_later_layers(target, arch, scale=0.2)
    draft_config = copy.deepcopy(config)
    draft_config.num_hidden_layers = 1
    draft = model_class(draft_config)
    draft.load_state_dict({k: v for k, v in target.state_dict().items() if k in draft.state_dict()})
    feature_draft = tiny_feature_draft(target, arch)
    for model in (target, draft, feature_draft):
        model.to(dtype)
        model.generation_config.pad_token_id = tokenizer.eos_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    return ModelPair(target, draft, tokenizer, {"source": "tiny", "arch": arch, "seed": seed}, feature_draft)


def tiny_feature_draft(target: PreTrainedModel, arch: str, feature_scale: float = 0.01) -> PreTrainedModel:
    """A one-layer feature draft of a tiny target, over its whole vocabulary: a Llama target's first layer and
    final norm (random layers for GPT-NeoX), reading its token's embedding plus `feature_scale` x the target state."""
    from spec_decode import offline

    t = target.config
    config = LlamaConfig(vocab_size=t.vocab_size, hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
                         num_hidden_layers=1, num_attention_heads=t.num_attention_heads, num_key_value_heads=2,
                         max_position_embeddings=t.max_position_embeddings, initializer_range=0.3,
                         eos_token_id=t.eos_token_id, bos_token_id=t.bos_token_id,
                         attn_implementation=t._attn_implementation, shortlist_size=t.vocab_size, feature_draft=True)
    draft = offline.FeatureDraftForCausalLM(config)
    draft.lm_head.shortlist.copy_(torch.arange(t.vocab_size))
    if arch == "llama":
        draft.model.layers[0].load_state_dict(target.model.layers[0].state_dict())
        draft.model.norm.load_state_dict(target.model.norm.state_dict())
    with torch.no_grad():
        eye = torch.eye(t.hidden_size)
        draft.fc.weight.copy_(torch.cat([eye, feature_scale * eye], 1))
        draft.fc.bias.zero_()
    draft.attach_target(target)
    return draft.eval()


def _tiny_config(arch: str, vocab_size: int, eos_token_id: int, attn_implementation: str):
    common = dict(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                  intermediate_size=128, max_position_embeddings=8192, initializer_range=0.3,
                  eos_token_id=eos_token_id, bos_token_id=eos_token_id, attn_implementation=attn_implementation)
    if arch == "gpt_neox":
        return GPTNeoXConfig(rotary_pct=0.25, **common)
    if arch == "llama":
        return LlamaConfig(num_key_value_heads=2, **common)
    raise ModelLoadError(f"unknown tiny architecture {arch!r}; use 'gpt_neox' or 'llama'")


def random_pair(cfg: Mapping, dtype: torch.dtype, device: torch.device, attention: str) -> ModelPair:
    """Randomly initialised GPT-NeoX target and draft built from the config's inline `target` / `draft` sizes.

    No files and no network: for forward-cost and overhead measurements at a real model's shape (the weights,
    and so the acceptance numbers, mean nothing). The models are built directly on `device` in `dtype`.
    """
    if cfg.get("arch", "gpt_neox") != "gpt_neox":
        raise ModelLoadError("source: random builds GPT-NeoX models only (arch: gpt_neox)")
    tokenizer = byte_tokenizer()
    torch.manual_seed(cfg.get("seed", 0))
    models = []
    for role in ("target", "draft"):
        sizes = dict(cfg.get(role) or {})
        if not sizes:
            raise ModelLoadError(f"source: random needs the {role}'s sizes under model.{role}")
        config = GPTNeoXConfig(**sizes, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
                               attn_implementation=attention)
        with torch.device(device):
            model = GPTNeoXForCausalLM._from_config(config, dtype=dtype)
        model.generation_config.pad_token_id = model.generation_config.eos_token_id = tokenizer.eos_token_id
        models.append(model)
    return ModelPair(*models, tokenizer, {"source": "random", "arch": "gpt_neox", "seed": cfg.get("seed", 0)})


def _damp_later_layers(model: PreTrainedModel, arch: str, scale: float) -> None:
    """Scale the residual contributions of every layer after the first."""
    layers = model.gpt_neox.layers if arch == "gpt_neox" else model.model.layers
    with torch.no_grad():
        for layer in layers[1:]:
            if arch == "gpt_neox":
                outputs = (layer.attention.dense.weight, layer.mlp.dense_4h_to_h.weight)
            else:
                outputs = (layer.self_attn.o_proj.weight, layer.mlp.down_proj.weight)
            for weight in outputs:
                weight.mul_(scale)


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (256 byte tokens + EOS) that needs no files."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {char: i for i, char in enumerate(sorted(alphabet))}
    vocab[TINY_EOS] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=TINY_EOS, pad_token=TINY_EOS)


def _dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ModelLoadError(f"unknown dtype {name!r}; choose one of {sorted(DTYPES)}")
    return DTYPES[name]


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {name!r} requested but CUDA is not available here; use device=cpu")
    return torch.device(name)


def _count(model: PreTrainedModel) -> int:
    return sum(p.numel() for p in model.parameters())
