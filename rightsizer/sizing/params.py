"""Model shape and exact parameter counts from a Hugging Face config.

``model_spec`` turns a config (dict, ``PretrainedConfig``, local path, or hub id resolved to
its ``config.json`` only) into a frozen :class:`ModelSpec`; ``count_params`` counts the
parameters the way ``transformers`` builds the model, so the totals match
``sum(p.numel() for p in model.parameters())`` exactly (tests cross-check on the meta device).

Supported architectures (``model_type``): see :data:`SUPPORTED_ARCHITECTURES`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Mapping

from rightsizer.errors import ConfigError


@dataclass(frozen=True)
class ArchRules:
    """How one architecture family lays out its parameters (defaults mirror transformers)."""

    family: str
    tied_default: bool
    qkv_bias: bool | None = None  # None: read ``attention_bias`` (default False)
    o_bias: bool | None = None  # None: same as ``attention_bias``
    norm: str = "rms"  # "rms" (weight only) or "layer" (weight + bias)
    norms_per_layer: int = 2
    qk_norm: bool = False  # per-head RMSNorm on q and k (qwen3)
    gated_mlp: bool = True
    moe: bool = False
    sliding: str = "none"  # "all" (every layer), "alternate" (gemma2 even layers), "none"


_RULES: dict[str, ArchRules] = {
    "llama": ArchRules("llama", tied_default=False),
    "mistral": ArchRules("llama", tied_default=False, qkv_bias=False, o_bias=False, sliding="all"),
    "mixtral": ArchRules("llama", tied_default=False, qkv_bias=False, o_bias=False, moe=True, sliding="all"),
    "qwen2": ArchRules("llama", tied_default=False, qkv_bias=True, o_bias=False),
    "qwen3": ArchRules("llama", tied_default=False, qk_norm=True),
    "gemma": ArchRules("llama", tied_default=True, qkv_bias=None, o_bias=None),
    "gemma2": ArchRules("llama", tied_default=True, norms_per_layer=4, sliding="alternate"),
    "phi3": ArchRules("llama", tied_default=False, qkv_bias=False, o_bias=False, sliding="all"),
    "gpt2": ArchRules("gpt2", tied_default=True, qkv_bias=True, o_bias=True, norm="layer", gated_mlp=False),
    "gpt_neox": ArchRules("gpt_neox", tied_default=False, norm="layer", gated_mlp=False),
}

SUPPORTED_ARCHITECTURES: tuple[str, ...] = tuple(sorted(_RULES))


@dataclass(frozen=True)
class ModelSpec:
    """The shape of a decoder-only transformer, enough to count parameters and FLOPs."""

    model_type: str
    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    gated_mlp: bool
    norm: str
    norms_per_layer: int
    qk_norm: bool
    learned_positions: int  # rows of a learned position embedding (gpt2), else 0
    experts: int  # 0 for dense models
    experts_per_token: int
    sliding_window: int | None
    sliding_layers: int  # how many layers use the sliding window
    max_positions: int | None

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def is_moe(self) -> bool:
        return self.experts > 0


@dataclass(frozen=True)
class ParamCount:
    """Parameter totals. ``active`` differs from ``total`` only for mixture-of-experts models.

    ``linear`` / ``linear_active`` are the weight matrices inside the transformer blocks (what
    GPTQ, AWQ, bnb and fp8 quantize); ``embedding``, ``lm_head`` (0 when tied) and ``other``
    (norms, biases, router) stay at 16-bit in every common quantization recipe.
    """

    total: int
    active: int
    embedding: int = 0
    lm_head: int = 0
    linear: int = 0
    linear_active: int = 0
    other: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "total": self.total, "active": self.active, "embedding": self.embedding,
            "lm_head": self.lm_head, "linear": self.linear, "linear_active": self.linear_active,
            "other": self.other,
        }


# --------------------------------------------------------------------------- loading configs


def load_config(config: Any) -> dict[str, Any]:
    """Return the config as a plain dict: from a dict, a ``PretrainedConfig``-like object, a
    local directory or ``config.json`` path, or a hub id (downloads ``config.json`` only)."""
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict") and callable(config.to_dict):
        return dict(config.to_dict())
    if isinstance(config, (str, os.PathLike)):
        path = os.fspath(config)
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
            if not os.path.isfile(path):
                raise ConfigError(f"no config.json in directory {os.fspath(config)!r}")
        if os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as fh:
                    data = json.load(fh)
            except (OSError, json.JSONDecodeError) as exc:
                raise ConfigError(f"cannot read model config {path!r}: {exc}") from None
            if not isinstance(data, dict):
                raise ConfigError(f"model config {path!r} is not a JSON object")
            return data
        return _load_hub_config(path)
    raise ConfigError(
        f"model config must be a dict, a PretrainedConfig, a path or a hub id, not {type(config).__name__}"
    )


def _load_hub_config(repo_id: str) -> dict[str, Any]:
    if repo_id.count("/") != 1 or repo_id.startswith(("/", ".")) or repo_id.endswith(".json"):
        raise ConfigError(f"{repo_id!r} is neither an existing file or directory nor a hub id like 'org/name'")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        raise ConfigError(f"{repo_id!r}: resolving a hub id needs huggingface_hub installed") from None
    try:
        local = hf_hub_download(repo_id, "config.json")
    except Exception as exc:  # network, auth, missing repo: all user-fixable
        raise ConfigError(
            f"could not fetch config.json for hub id {repo_id!r} ({type(exc).__name__}: {exc}); "
            "pass a local config.json path instead, or log in / check the id"
        ) from None
    with open(local, encoding="utf-8") as fh:
        return json.load(fh)


def _text_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Multimodal wrappers keep the language model under ``text_config``."""
    if "text_config" in cfg and isinstance(cfg["text_config"], Mapping) and cfg.get("model_type") not in _RULES:
        inner = dict(cfg["text_config"])
        inner.setdefault("_name_or_path", cfg.get("_name_or_path", ""))
        return inner
    return cfg


# --------------------------------------------------------------------------- spec


def _get(cfg, problems, *keys, default=None, required=True):
    for key in keys:
        if key in cfg and cfg[key] is not None:
            return cfg[key]
    if required and default is None:
        problems.append(f"missing config field {' or '.join(repr(k) for k in keys)}")
    return default


def model_spec(config: Any) -> ModelSpec:
    """Parse a config into a :class:`ModelSpec`. Raises ``ConfigError`` listing every problem."""
    if isinstance(config, ModelSpec):
        return config
    cfg = _text_config(load_config(config))
    model_type = cfg.get("model_type")
    if model_type not in _RULES:
        raise ConfigError(
            f"unknown architecture model_type={model_type!r}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    rules = _RULES[model_type]
    problems: list[str] = []
    if rules.family == "gpt2":
        hidden = _get(cfg, problems, "n_embd", "hidden_size")
        layers = _get(cfg, problems, "n_layer", "num_hidden_layers")
        heads = _get(cfg, problems, "n_head", "num_attention_heads")
        inner = cfg.get("n_inner")
        intermediate = inner if inner is not None else (4 * hidden if isinstance(hidden, int) else None)
        learned = _get(cfg, problems, "n_positions", "max_position_embeddings")
        max_positions = learned
        kv_heads = heads
    else:
        hidden = _get(cfg, problems, "hidden_size")
        layers = _get(cfg, problems, "num_hidden_layers")
        heads = _get(cfg, problems, "num_attention_heads")
        intermediate = _get(cfg, problems, "intermediate_size")
        kv_heads = cfg.get("num_key_value_heads") or heads
        learned = 0
        max_positions = cfg.get("max_position_embeddings")
    vocab = _get(cfg, problems, "vocab_size")
    for label, value in (("hidden size", hidden), ("layers", layers), ("attention heads", heads),
                         ("intermediate size", intermediate), ("vocab_size", vocab), ("kv heads", kv_heads)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            problems.append(f"{label} must be a positive integer, got {value!r}")
    if problems:
        raise ConfigError(problems, source=f"{model_type} config")

    head_dim = cfg.get("head_dim") or hidden // heads
    if cfg.get("head_dim") is None and hidden % heads:
        problems.append(f"hidden size {hidden} is not divisible by {heads} heads and no head_dim is given")
    if heads % kv_heads:
        problems.append(f"num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}")

    attention_bias = bool(cfg.get("attention_bias", model_type == "gpt_neox"))
    qkv_bias = attention_bias if rules.qkv_bias is None else rules.qkv_bias
    o_bias = attention_bias if rules.o_bias is None else rules.o_bias
    mlp_bias = bool(cfg.get("mlp_bias", False)) or rules.family in ("gpt2", "gpt_neox")
    tied = cfg.get("tie_word_embeddings")
    tied = rules.tied_default if tied is None else bool(tied)

    experts = per_token = 0
    if rules.moe:
        experts = _get(cfg, problems, "num_local_experts", "num_experts")
        per_token = _get(cfg, problems, "num_experts_per_tok")
        if experts and per_token and per_token > experts:
            problems.append(f"num_experts_per_tok={per_token} exceeds num_local_experts={experts}")

    window = cfg.get("sliding_window") if rules.sliding != "none" else None
    if window is not None and cfg.get("use_sliding_window") is False:
        window = None
    sliding_layers = 0
    if window:
        layer_types = cfg.get("layer_types")
        if isinstance(layer_types, list) and len(layer_types) == layers:
            sliding_layers = sum(1 for t in layer_types if "sliding" in str(t))
        elif rules.sliding == "alternate":
            sliding_layers = (layers + 1) // 2  # gemma2: even-indexed layers slide
        else:
            sliding_layers = layers
    if problems:
        raise ConfigError(problems, source=f"{model_type} config")

    return ModelSpec(
        model_type=model_type,
        name=str(cfg.get("_name_or_path") or cfg.get("name_or_path") or model_type),
        hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
        intermediate=intermediate, vocab=vocab, tied=tied, qkv_bias=qkv_bias, o_bias=o_bias,
        mlp_bias=mlp_bias, gated_mlp=rules.gated_mlp, norm=rules.norm,
        norms_per_layer=rules.norms_per_layer, qk_norm=rules.qk_norm, learned_positions=learned or 0,
        experts=experts or 0, experts_per_token=per_token or 0,
        sliding_window=int(window) if window else None, sliding_layers=sliding_layers,
        max_positions=max_positions,
    )


# --------------------------------------------------------------------------- counting


def _count(spec: ModelSpec) -> ParamCount:
    h, q, kv = spec.hidden, spec.q_dim, spec.kv_dim
    norm_size = 2 * h if spec.norm == "layer" else h

    attn_w = h * q + 2 * h * kv + q * h
    attn_b = (q + 2 * kv if spec.qkv_bias else 0) + (h if spec.o_bias else 0)
    qk_norm = 2 * spec.head_dim if spec.qk_norm else 0

    mats = 3 if spec.gated_mlp else 2
    expert_w = mats * h * spec.intermediate
    expert_b = (spec.intermediate * (mats - 1) + h) if spec.mlp_bias else 0
    if spec.is_moe:
        mlp_w, mlp_w_active = spec.experts * expert_w, spec.experts_per_token * expert_w
        router = h * spec.experts
        mlp_b = spec.experts * expert_b
    else:
        mlp_w = mlp_w_active = expert_w
        router = 0
        mlp_b = expert_b

    per_layer_other = attn_b + qk_norm + mlp_b + router + spec.norms_per_layer * norm_size
    linear = spec.layers * (attn_w + mlp_w)
    linear_active = spec.layers * (attn_w + mlp_w_active)
    other = spec.layers * per_layer_other + norm_size  # + final norm
    embedding = spec.vocab * h + spec.learned_positions * h
    lm_head = 0 if spec.tied else spec.vocab * h
    total = embedding + lm_head + linear + other
    active = total - (linear - linear_active)
    return ParamCount(total=total, active=active, embedding=embedding, lm_head=lm_head,
                      linear=linear, linear_active=linear_active, other=other)


def count_params(config: Any) -> ParamCount:
    """Exact total and active parameter counts for a supported architecture."""
    return _count(model_spec(config))
