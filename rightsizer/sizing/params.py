"""Model shape and exact parameter counts from a Hugging Face config.

``model_spec`` turns a config (dict, ``PretrainedConfig``, local path, or hub id resolved to
its ``config.json`` only) into a frozen :class:`ModelSpec`; ``count_params`` counts the
parameters the way ``transformers`` builds the model, so the totals match
``sum(p.numel() for p in model.parameters())`` exactly (tests cross-check on the meta device).

The layout rules per ``model_type`` live with their family (``rightsizer.families``). A
``model_type`` no family covers is still sized when transformers knows it: the model is built
on the meta device (no weights), its parameters are counted by kind, and the shape fields are
read with the usual config keys (``ModelSpec.generic`` is then true and the decision record
says so). Only a config that neither knows is a ConfigError.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Mapping

from rightsizer.errors import ConfigError
from rightsizer.families import context_length, rules_for, supported_model_types
from rightsizer.refs import is_hub_id

# the model types with family rules (exact layout); any other is counted on the meta device
SUPPORTED_ARCHITECTURES: tuple[str, ...] = supported_model_types()


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
    qk_norm: str  # "none", "head" (over head_dim) or "full" (over the q and kv widths)
    learned_positions: int  # rows of a learned position embedding (gpt2), else 0
    experts: int  # 0 for dense models
    experts_per_token: int
    sliding_window: int | None
    sliding_layers: int  # how many layers use the sliding window
    max_positions: int | None
    generic: bool = False  # no family rules: counted on the meta device (``counted``)
    counted: "ParamCount | None" = None

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
    if not is_hub_id(repo_id):
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
    if "text_config" in cfg and isinstance(cfg["text_config"], Mapping) and rules_for(cfg.get("model_type")) is None:
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
    rules = rules_for(model_type)
    if rules is None:
        return _generic_spec(cfg)
    problems: list[str] = []
    if rules.layout == "gpt2":
        hidden = _get(cfg, problems, "n_embd", "hidden_size")
        layers = _get(cfg, problems, "n_layer", "num_hidden_layers")
        heads = _get(cfg, problems, "n_head", "num_attention_heads")
        inner = cfg.get("n_inner")
        intermediate = inner if inner is not None else (4 * hidden if isinstance(hidden, int) else None)
        learned = _get(cfg, problems, "n_positions", "max_position_embeddings")  # rows of the position table
        kv_heads = heads
    else:
        hidden = _get(cfg, problems, "hidden_size")
        layers = _get(cfg, problems, "num_hidden_layers")
        heads = _get(cfg, problems, "num_attention_heads")
        intermediate = _get(cfg, problems, rules.moe_intermediate_key or "intermediate_size")
        kv_heads = cfg.get("num_key_value_heads") or heads
        learned = 0
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
    mlp_bias = bool(cfg.get("mlp_bias", False)) or rules.layout in ("gpt2", "gpt_neox")
    tied = cfg.get("tie_word_embeddings")
    tied = rules.tied_default if tied is None else bool(tied)

    experts = per_token = 0
    if rules.moe and (cfg.get("mlp_only_layers") or cfg.get("decoder_sparse_step", 1) != 1):
        return _generic_spec(cfg)  # dense and sparse layers mixed: count what transformers builds
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
        if isinstance(layer_types, list) and len(layer_types) == layers:  # rules.sliding "types" too
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
        max_positions=context_length(cfg),
    )


def _generic_spec(cfg: dict[str, Any]) -> ModelSpec:
    """A :class:`ModelSpec` for a ``model_type`` no family covers: transformers builds the model
    on the meta device (no weights), its parameters are counted by kind, and the shape is read
    with the usual config keys. ConfigError when transformers does not know the type either
    (or it is not a causal LM)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type = cfg.get("model_type")
    known = ", ".join(supported_model_types())
    fields = {k: v for k, v in cfg.items() if k != "model_type"}
    try:
        config = AutoConfig.for_model(str(model_type), **fields)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"unknown architecture model_type={model_type!r}: no family in rightsizer.families "
                          f"covers it ({known}) and transformers cannot build it as a causal LM "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    problems: list[str] = []
    hidden = _get(cfg, problems, "hidden_size", "n_embd", "d_model")
    layers = _get(cfg, problems, "num_hidden_layers", "n_layer", "num_layers")
    heads = _get(cfg, problems, "num_attention_heads", "n_head")
    vocab = _get(cfg, problems, "vocab_size")
    if problems:
        raise ConfigError(problems, source=f"{model_type} config")
    kv_heads = cfg.get("num_key_value_heads") or heads
    experts = int(cfg.get("num_local_experts") or cfg.get("num_experts") or 0)
    per_token = int(cfg.get("num_experts_per_tok") or 0) if experts else 0
    intermediate = (cfg.get("moe_intermediate_size") if experts else None) or cfg.get("intermediate_size") \
        or cfg.get("n_inner") or cfg.get("ffn_dim") or 4 * hidden
    window = cfg.get("sliding_window") if cfg.get("use_sliding_window", True) is not False else None
    layer_types = cfg.get("layer_types")
    sliding_layers = (sum(1 for t in layer_types if "sliding" in str(t)) if isinstance(layer_types, list)
                      else layers) if window else 0
    counted = _count_on_meta(model, layers, experts, per_token)
    tied = counted.lm_head == 0
    return ModelSpec(
        model_type=str(model_type), name=str(cfg.get("_name_or_path") or cfg.get("name_or_path") or model_type),
        hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads,
        head_dim=cfg.get("head_dim") or hidden // heads, intermediate=intermediate, vocab=vocab, tied=tied,
        qkv_bias=bool(cfg.get("attention_bias", False)), o_bias=bool(cfg.get("attention_bias", False)),
        mlp_bias=bool(cfg.get("mlp_bias", False)), gated_mlp=True, norm="rms", norms_per_layer=2,
        qk_norm="none", learned_positions=0, experts=experts, experts_per_token=per_token,
        sliding_window=int(window) if window else None, sliding_layers=sliding_layers,
        max_positions=context_length(cfg),
        generic=True, counted=counted)


def _count_on_meta(model, layers: int, experts: int, per_token: int) -> ParamCount:
    """Parameters of a model built on the meta device, by kind: the input (and position)
    embeddings, an untied head, the matrices of the decoder blocks (the blocks: the module list
    with one entry per layer), the rest."""
    import torch

    seen: set[int] = set()

    def numel(params) -> int:
        n = 0
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
        return n

    head = model.get_output_embeddings()
    inp = model.get_input_embeddings()
    embedding = numel(inp.parameters()) if inp is not None else 0
    lm_head = numel(head.parameters()) if head is not None else 0  # 0 when tied: already seen
    blocks = next((m for _, m in model.named_modules()
                   if isinstance(m, torch.nn.ModuleList) and len(m) == layers), None)
    linear = expert = 0
    if blocks is not None:
        for name, p in blocks.named_parameters():
            if p.dim() >= 2 and id(p) not in seen:
                seen.add(id(p))
                linear += p.numel()
                expert += p.numel() if "experts" in name else 0
    for _, m in model.named_modules():  # learned position embeddings count as embedding
        if isinstance(m, torch.nn.Embedding) and m is not inp and m is not head:
            embedding += numel(m.parameters())
    other = numel(model.parameters())
    total = embedding + lm_head + linear + other
    linear_active = linear - (expert - expert * per_token // experts if experts and per_token else 0)
    return ParamCount(total=total, active=total - (linear - linear_active), embedding=embedding,
                      lm_head=lm_head, linear=linear, linear_active=linear_active, other=other)


# --------------------------------------------------------------------------- counting


def count_spec(spec: ModelSpec) -> ParamCount:
    """Total and active parameters of a parsed ``ModelSpec`` (``count_params`` from a config)."""
    if spec.counted is not None:
        return spec.counted
    h, q, kv = spec.hidden, spec.q_dim, spec.kv_dim
    norm_size = 2 * h if spec.norm == "layer" else h

    attn_w = h * q + 2 * h * kv + q * h
    attn_b = (q + 2 * kv if spec.qkv_bias else 0) + (h if spec.o_bias else 0)
    qk_norm = {"head": 2 * spec.head_dim, "full": q + kv}.get(spec.qk_norm, 0)

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
    """Exact total and active parameter counts: by the family's rules, or for a ``model_type``
    no family covers, counted on the meta device."""
    return count_spec(model_spec(config))
