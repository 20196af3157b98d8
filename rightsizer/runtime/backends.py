"""Quantization backends, chosen by hardware and by what is installed.

Every precision has an ordered list of backends (``backends`` of its entry in the
``rightsizer.precisions`` table, the one place that says which backends implement which
precision and in what preference). A backend declares the devices it runs on
and checks its own requirements (packages, compute capability) *before* anything is tried:
one that cannot run here is reported with the reason, never attempted blindly.

===================  ===========  ======================================================
backend              precision    runs on / needs
===================  ===========  ======================================================
native               bf16         CPU, CUDA with bf16 support (a cast, no quantization)
torchao-fp8wo        fp8          CUDA, compute capability >= 8.9; torchao
torchao-int8wo       int8         CPU, CUDA; torchao ``Int8WeightOnlyConfig`` (per row)
bnb-int8             int8         CUDA; bitsandbytes LLM.int8 (load-time style)
torchao-int4wo       int4         CUDA, compute capability >= 8.0; torchao tinygemm layout
bnb-nf4              int4         CUDA; bitsandbytes 4-bit NF4 (load-time style)
torch-int4pack       int4         CPU; PyTorch's packed int4 kernel (see ``int4pack``)
gptq, awq            int4         CUDA; pre-quantized by ``functions/quantize_gptq.py``
                                  in its own image (packages do not fit beside mlrun)
===================  ===========  ======================================================

Only ``nn.Linear`` layers are quantized (weight-only); embeddings and norms stay in the
model's dtype. An LM head tied to the input embeddings is left alone: quantizing it would
untie it and store the matrix twice.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch import nn

from rightsizer.errors import ConfigError
from rightsizer.precisions import (
    FEATURE_MIN_CC, QUANT_CONFIG_VERSION, SEARCH_ORDER, check_search_precision, quant_config,
)
from rightsizer.runtime import int4pack


# --------------------------------------------------------------------------- devices

def normalize_device(device: str | torch.device | None) -> str:
    """'cpu' or 'cuda[:n]'; 'auto' picks CUDA when present. Anything else is a ConfigError."""
    if device is None or str(device) == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    dev = str(device)
    if dev == "cpu" or dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit()):
        return dev
    raise ConfigError(f"device: {device!r}; expected 'cpu', 'cuda', 'cuda:<n>' or 'auto'")


def _cuda_capability(device: str) -> tuple[int, int] | None:
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(torch.device(device))


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _min_cc(feature: str) -> tuple[int, int]:
    """The table's minimum compute capability of a catalog feature, as torch reports one (8.9 -> (8, 9))."""
    return divmod(round(FEATURE_MIN_CC[feature] * 10), 10)


# --------------------------------------------------------------------------- backends

@dataclass(frozen=True)
class Backend:
    """One way to run a precision. ``check`` returns None when it can run, else why not."""

    name: str
    precision: str
    kind: str  # "cast" | "in_place" | "load_time" | "pre_quantized"
    check: Callable[[str], str | None]
    apply: Callable[[nn.Module, Callable[[str, nn.Module], bool], dict], None] | None
    description: str = ""
    # why this backend cannot take one layer (a shape its kernel refuses), else None
    refuses: Callable[[nn.Linear, dict], str | None] | None = None


def _need_cuda(device: str) -> str | None:
    if not device.startswith("cuda"):
        return "needs a CUDA GPU; this device is CPU"
    if not torch.cuda.is_available():
        return "needs a CUDA GPU; torch sees none"
    return None


def _check_native(device: str) -> str | None:
    if device.startswith("cuda"):
        reason = _need_cuda(device)
        if reason:
            return reason
        if not torch.cuda.is_bf16_supported():
            return f"this GPU has no bf16 support (compute capability < {FEATURE_MIN_CC['bf16']})"
    return None


def _check_torchao(device: str, min_cc: tuple[int, int] | None = None, cuda_only: bool = False) -> str | None:
    if not _has("torchao"):
        return "torchao is not installed"
    if cuda_only or min_cc:
        reason = _need_cuda(device)
        if reason:
            return reason
    if device.startswith("cuda") and not torch.cuda.is_available():
        return "needs a CUDA GPU; torch sees none"
    cc = _cuda_capability(device)
    if min_cc and cc is not None and cc < min_cc:
        return f"needs compute capability >= {min_cc[0]}.{min_cc[1]}; this GPU has {cc[0]}.{cc[1]}"
    return None


def _check_bnb(device: str) -> str | None:
    reason = _need_cuda(device)
    if reason:
        return reason
    if not _has("bitsandbytes"):
        return "bitsandbytes is not installed"
    return None


def _check_int4pack(device: str) -> str | None:
    if device != "cpu":
        return "CPU kernel only (on CUDA use torchao-int4wo or bnb-nf4)"
    if not int4pack.kernel_available():
        return "this torch build has no aten._weight_int4pack_mm_for_cpu"
    return None


def _check_gptq(device: str) -> str | None:
    """GPTQ needs calibration text and gptqmodel, so it is never applied in place here."""
    if device == "cpu" and not int4pack.kernel_available():
        return "this torch build has no CPU int4 kernel to load a GPTQ checkpoint on"
    return ("pre-quantized with calibration text by the quantize-gptq function (its own environment: "
            "gptqmodel does not fit beside mlrun 1.12); the size_and_deploy pipeline runs it when a GPU "
            "is configured and its checkpoint joins this search")


def _check_awq(device: str) -> str | None:
    reason = _need_cuda(device)
    if reason:
        return reason
    return ("pre-quantized by the quantize-gptq function with method='awq' (CUDA); this library does "
            "not load AWQ checkpoints: serve them with vLLM or gptqmodel")


def _apply_native(model, keep_fn, opts) -> None:
    return None  # the dtype cast happens for every backend in quantize_model


def _torchao_filter(keep_fn):
    def filter_fn(module: nn.Module, name: str) -> bool:
        return isinstance(module, nn.Linear) and _plain(module) and not keep_fn(name, module)
    return filter_fn


def _plain(module: nn.Module) -> bool:
    """An ``nn.Linear`` whose weight is an ordinary tensor (not already quantized)."""
    return isinstance(module, nn.Linear) and type(module.weight) in (nn.Parameter, torch.Tensor)


def _apply_torchao_int8(model, keep_fn, opts) -> None:
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    quantize_(model, Int8WeightOnlyConfig(), filter_fn=_torchao_filter(keep_fn))


def _apply_torchao_int4(model, keep_fn, opts) -> None:
    from torchao.quantization import Int4WeightOnlyConfig, quantize_
    from torchao.quantization.quantize_.workflows.int4.int4_packing_format import Int4PackingFormat

    group = opts.get("group_size") or 128
    cfg = Int4WeightOnlyConfig(group_size=group, int4_packing_format=Int4PackingFormat.TILE_PACKED_TO_4D)
    quantize_(model, cfg, filter_fn=_torchao_filter(keep_fn))


def _torchao_int4_refuses(lin: nn.Linear, opts: dict) -> str | None:
    group = opts.get("group_size") or 128
    if lin.in_features % group:
        return f"in_features {lin.in_features} is not a multiple of the group size {group}"
    return None


def _apply_torchao_fp8(model, keep_fn, opts) -> None:
    from torchao.quantization import Float8WeightOnlyConfig, quantize_

    quantize_(model, Float8WeightOnlyConfig(), filter_fn=_torchao_filter(keep_fn))


def _replace_linears(model: nn.Module, keep_fn, make: Callable[[str, nn.Linear], nn.Module | None]) -> None:
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if _plain(child) and not keep_fn(full, child):
                new = make(full, child)
                if new is not None:
                    setattr(module, child_name, new)


def _apply_int4pack(model, keep_fn, opts) -> None:
    group = opts.get("group_size") or int4pack.DEFAULT_GROUP_SIZE

    def make(name, lin):
        return int4pack.Int4PackedLinear.from_linear(lin, group)

    _replace_linears(model, keep_fn, make)


def _int4pack_refuses(lin: nn.Linear, opts: dict) -> str | None:
    return int4pack.pack_problem(lin, opts.get("group_size") or int4pack.DEFAULT_GROUP_SIZE,
                                 "cuda" if str(opts.get("device", "cpu")).startswith("cuda") else "cpu")


def _apply_bnb(model, keep_fn, opts, four_bit: bool) -> None:
    import bitsandbytes as bnb

    device = opts["device"]

    def make(name, lin):
        w = lin.weight.data.to("cpu", torch.float16)
        if four_bit:
            new = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                    compute_dtype=torch.bfloat16, quant_type="nf4")
            new.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type="nf4")
        else:
            new = bnb.nn.Linear8bitLt(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                      has_fp16_weights=False, threshold=6.0)
            new.weight = bnb.nn.Int8Params(w, requires_grad=False, has_fp16_weights=False)
        if lin.bias is not None:
            new.bias = nn.Parameter(lin.bias.data.to(torch.float16 if not four_bit else torch.bfloat16),
                                    requires_grad=False)
        return new.to(device)  # bitsandbytes quantizes when the weight moves to the GPU

    _replace_linears(model, keep_fn, make)


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("native", "bf16", "cast", _check_native, _apply_native, "bf16 weights, no quantization"),
    Backend("torchao-fp8wo", "fp8", "in_place", lambda d: _check_torchao(d, _min_cc("fp8")), _apply_torchao_fp8,
            "torchao Float8WeightOnlyConfig (e4m3, per row)"),
    Backend("torchao-int8wo", "int8", "in_place", _check_torchao, _apply_torchao_int8,
            "torchao Int8WeightOnlyConfig (symmetric, per row)"),
    Backend("bnb-int8", "int8", "load_time", _check_bnb, lambda m, k, o: _apply_bnb(m, k, o, False),
            "bitsandbytes LLM.int8 (outlier threshold 6.0)"),
    # tinygemm's int4 matmul takes bf16 activations: it needs what bf16 needs (Ampere, 8.0)
    Backend("torchao-int4wo", "int4", "in_place", lambda d: _check_torchao(d, _min_cc("bf16")), _apply_torchao_int4,
            "torchao Int4WeightOnlyConfig, tinygemm tile-packed layout, group 128", _torchao_int4_refuses),
    Backend("bnb-nf4", "int4", "load_time", _check_bnb, lambda m, k, o: _apply_bnb(m, k, o, True),
            "bitsandbytes 4-bit NF4"),
    Backend("torch-int4pack", "int4", "in_place", _check_int4pack, _apply_int4pack,
            "PyTorch CPU int4 pack kernel, asymmetric per group of 64", _int4pack_refuses),
    Backend("gptq", "int4", "pre_quantized", _check_gptq, None,
            "GPTQ 4-bit with calibration text (separate MLRun function)"),
    Backend("awq", "int4", "pre_quantized", _check_awq, None,
            "AWQ 4-bit with calibration text (separate MLRun function)"),
)}

def backend_status(precision: str, device: str = "cpu") -> list[dict]:
    """Every backend of ``precision`` in preference order: name, kind, usable, reason."""
    entry = check_search_precision(precision)
    dev = normalize_device(device)
    rows = []
    for name in entry.backends:
        b = BACKENDS[name]
        reason = b.check(dev)
        usable = reason is None and b.kind != "pre_quantized"
        rows.append({"backend": name, "kind": b.kind, "usable": usable,
                     "reason": None if usable else reason, "description": b.description})
    return rows


def available_backends(device: str = "cpu") -> dict[str, dict]:
    """For each precision: the backend used on ``device`` (or None) and, when None, why.

    ``{"int4": {"backend": "torch-int4pack", "reason": None, "candidates": [...]}, ...}``;
    ``candidates`` lists every backend of the precision with its own status.
    """
    out = {}
    for precision in SEARCH_ORDER:
        rows = backend_status(precision, device)
        chosen = next((r["backend"] for r in rows if r["usable"]), None)
        reason = None if chosen else "; ".join(f"{r['backend']}: {r['reason']}" for r in rows)
        out[precision] = {"backend": chosen, "reason": reason, "candidates": rows}
    return out


def resolve_backend(precision: str, backend: str | None, device: str) -> Backend:
    """The backend to use, or a ConfigError saying why ``precision`` cannot run here."""
    check_search_precision(precision)
    dev = normalize_device(device)
    if backend is not None:
        if backend not in BACKENDS:
            raise ConfigError(f"backend: {backend!r} is unknown; expected one of {sorted(BACKENDS)}")
        b = BACKENDS[backend]
        if b.precision != precision:
            raise ConfigError(f"backend: {backend!r} implements {b.precision}, not {precision}")
        reason = b.check(dev)
        if reason is not None or b.kind == "pre_quantized":
            raise ConfigError(f"precision: {precision} with backend {backend} cannot run on {dev}: {reason}")
        return b
    choice = available_backends(dev)[precision]
    if choice["backend"] is None:
        raise ConfigError(f"precision: {precision} cannot run on {dev}: {choice['reason']}")
    return BACKENDS[choice["backend"]]


# --------------------------------------------------------------------------- modules

def output_embedding_name(model: nn.Module) -> str | None:
    """Qualified name of the LM head module, if the model has one."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if head is None:
        return None
    return next((n for n, m in model.named_modules() if m is head), None)


def lm_head_is_tied(model: nn.Module) -> bool:
    get_in, get_out = getattr(model, "get_input_embeddings", None), getattr(model, "get_output_embeddings", None)
    if not callable(get_in) or not callable(get_out) or get_out() is None or get_in() is None:
        return False
    return get_out().weight is get_in().weight


def block_names(model: nn.Module) -> list[str]:
    """Names of the transformer blocks, in order: where the model's family keeps them
    (``rightsizer.families``), else the largest ModuleList of the model."""
    from rightsizer.families import family_of

    family = family_of(getattr(getattr(model, "config", None), "model_type", None))
    if family is not None:
        try:
            blocks = model.get_submodule(family.blocks)
        except AttributeError:
            blocks = None
        if isinstance(blocks, nn.ModuleList):
            return [f"{family.blocks}.{i}" for i in range(len(blocks))]
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and (best is None or len(module) > len(best[1])):
            best = (name, module)
    if best is None:
        return []
    return [f"{best[0]}.{i}" for i in range(len(best[1]))]


def sensitive_modules(model: nn.Module) -> list[str]:
    """Modules mixed precision keeps high: LM head, embeddings, the first and last blocks."""
    names = []
    head = output_embedding_name(model)
    if head:
        names.append(head)
    get_in = getattr(model, "get_input_embeddings", None)
    emb = get_in() if callable(get_in) else None
    if emb is not None:
        names.extend(n for n, m in model.named_modules() if m is emb)
    blocks = block_names(model)
    if blocks:
        names.append(blocks[0])
        if blocks[-1] != blocks[0]:
            names.append(blocks[-1])
    return names


def _matcher(patterns: list[str]) -> Callable[[str], bool]:
    def match(name: str) -> bool:
        for p in patterns:
            if name == p or name.startswith(p + ".") or fnmatch.fnmatchcase(name, p):
                return True
        return False
    return match


def weight_bytes(model: nn.Module, float_dtype: torch.dtype | None = None) -> int:
    """True stored bytes of the weights: the size of the saved ``state_dict``.

    ``get_memory_footprint()`` reports the unquantized size for torchao tensor subclasses;
    serializing counts what is really kept (shared tensors, e.g. tied embeddings, once).
    ``float_dtype``: count the plain floating-point tensors (the layers left unquantized, norms,
    int4 scales) as if kept in it, quantized tensor subclasses as stored: the bytes as served in
    that dtype, the same whichever dtype this machine computed in (a CPU without bf16 units
    keeps them in fp32).
    """

    class _Count:
        def __init__(self):
            self.n = 0

        def write(self, b) -> int:
            k = memoryview(b).nbytes
            self.n += k
            return k

        def flush(self) -> None:
            pass

    sink = _Count()
    state = model.state_dict()
    if float_dtype is not None:
        # by storage: a tied tensor (two state_dict entries on one storage) stays one tensor
        cast: dict[tuple, torch.Tensor] = {}
        for key, t in state.items():
            if type(t) in (torch.Tensor, nn.Parameter) and t.is_floating_point() and t.dtype != float_dtype:
                where = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
                if where not in cast:
                    cast[where] = t.detach().to(float_dtype)
                state[key] = cast[where]
    torch.save(state, sink)
    return sink.n


# --------------------------------------------------------------------------- quantize

@dataclass
class QuantInfo:
    """What ``quantize_model`` did; ``to_config()`` is what ``apply_quant_config`` takes."""

    precision: str
    backend: str
    skip_modules: list[str]
    memory_bytes: int
    skip_precision: str = "bf16"
    dtype: str = "bfloat16"
    group_size: int | None = None
    device: str = "cpu"
    quantized_linears: int = 0
    kept_linears: list[str] = field(default_factory=list)
    seconds: float = 0.0
    substituted_from: str | None = None
    # layers the backend's kernel cannot take, kept at the next precision up: module, precision, reason
    fallback: list[dict] = field(default_factory=list)

    @property
    def mixed(self) -> bool:
        return bool(self.skip_modules)

    def to_config(self) -> dict:
        return quant_config(self.precision, self.backend, skip_modules=self.skip_modules,
                            skip_precision=self.skip_precision, dtype=self.dtype, group_size=self.group_size)

    def to_dict(self) -> dict:
        return asdict(self)


_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def _quantized_linear_count(model: nn.Module) -> tuple[int, list[str]]:
    quantized, kept = 0, []
    for name, m in model.named_modules():
        if isinstance(m, int4pack.Int4PackedLinear) or type(m).__name__ in ("Linear8bitLt", "Linear4bit"):
            quantized += 1
        elif isinstance(m, nn.Linear):
            if type(m.weight) in (nn.Parameter, torch.Tensor):
                kept.append(name)
            else:
                quantized += 1
    return quantized, kept


def quantize_model(model: nn.Module, precision: str, backend: str | None = None,
                   skip_modules: list[str] | None = None, device: str = "cpu",
                   group_size: int | None = None, dtype: str = "bfloat16",
                   skip_precision: str = "bf16") -> QuantInfo:
    """Quantize ``model`` in place to ``precision`` (weight-only) and say what was done.

    ``skip_modules``: module names (a name covers its children; globs allowed) kept at
    ``skip_precision``: "bf16" (the model's ``dtype``) or a precision above ``precision``
    (e.g. int8 for the sensitive blocks of an int4 model). Bad input, and a precision or
    backend the hardware cannot run, raise ConfigError with the reason before the model
    is touched.
    """
    b = resolve_backend(precision, backend, device)
    dev = normalize_device(device)
    if dtype not in _DTYPES:
        raise ConfigError(f"dtype: {dtype!r}; expected one of {sorted(_DTYPES)}")
    if group_size is not None and (not isinstance(group_size, int) or group_size <= 0 or group_size % 2):
        raise ConfigError(f"group_size: {group_size!r}; expected a positive even integer")
    skip = list(skip_modules or [])
    check_search_precision(skip_precision, "skip_precision")
    skip_backend = None
    if skip_precision != "bf16":
        if SEARCH_ORDER.index(skip_precision) >= SEARCH_ORDER.index(precision):
            raise ConfigError(f"skip_precision: {skip_precision} is not above {precision}")
        skip_backend = resolve_backend(skip_precision, None, dev)
    start = time.perf_counter()
    auto_keep = []
    head = output_embedding_name(model)
    if head and lm_head_is_tied(model):
        auto_keep.append(head)  # quantizing a tied head would store the matrix twice
    match = _matcher(skip + auto_keep)
    if b.kind != "cast" and not any((_plain(m) or _is_conv1d(m)) and not match(n) for n, m in model.named_modules()):
        raise ConfigError(f"skip_modules: {skip} leave no linear layer to quantize to {precision}")
    model.to(device=dev, dtype=_DTYPES[dtype])
    _conv1d_to_linear(model)
    opts = {"group_size": group_size, "device": dev}
    refused = {} if b.refuses is None else {
        name: why for name, m in model.named_modules()
        if _plain(m) and not match(name) and (why := b.refuses(m, opts))}
    with torch.no_grad():
        b.apply(model, lambda name, module: match(name) or name in refused, opts)
        fallback = _keep_one_up(model, precision, refused, dev)
        if skip_backend is not None and skip:
            in_skip, not_head = _matcher(skip), _matcher(auto_keep)
            skip_backend.apply(model, lambda name, module: not in_skip(name) or not_head(name) or not _plain(module),
                               {"group_size": None, "device": dev})
    quantized, kept = _quantized_linear_count(model)
    if b.kind != "cast" and quantized == 0:
        raise ConfigError(f"skip_modules: {skip} leave no linear layer to quantize to {precision}")
    used_group = group_size or {"torch-int4pack": int4pack.DEFAULT_GROUP_SIZE, "torchao-int4wo": 128}.get(b.name)
    return QuantInfo(precision=precision, backend=b.name, skip_modules=skip, skip_precision=skip_precision,
                     memory_bytes=weight_bytes(model), dtype=dtype, group_size=used_group,
                     device=dev, quantized_linears=quantized, kept_linears=kept,
                     seconds=time.perf_counter() - start, fallback=fallback)


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None \
        and module.weight.dim() == 2


def _conv1d_to_linear(model: nn.Module) -> None:
    """GPT-2's ``Conv1D`` (a linear layer with its weight stored [in, out]) as ``nn.Linear``,
    the same function, so every backend quantizes it like any projection."""
    for _, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if _is_conv1d(child):
                w = child.weight
                lin = nn.Linear(w.shape[0], w.shape[1], bias=child.bias is not None, device=w.device, dtype=w.dtype)
                with torch.no_grad():
                    lin.weight.copy_(w.t())
                    if child.bias is not None:
                        lin.bias.copy_(child.bias)
                setattr(module, child_name, lin)


def _keep_one_up(model: nn.Module, precision: str, refused: dict[str, str], device: str) -> list[dict]:
    """Quantize the layers ``precision``'s backend refused (name: why) at the nearest precision
    above it that runs on ``device`` and takes them, else leave them at the model's dtype; one
    entry per layer saying where it went and why."""
    if not refused:
        return []
    above = list(reversed(SEARCH_ORDER[1:SEARCH_ORDER.index(precision)]))  # int4 -> int8, fp8
    placed: dict[str, str] = {}
    for p in above:
        try:
            up = resolve_backend(p, None, device)
        except ConfigError:
            continue
        opts = {"group_size": None, "device": device}
        take = {n for n, m in model.named_modules() if n in refused
                and (up.refuses is None or up.refuses(m, opts) is None)}
        if take:
            up.apply(model, lambda name, module, take=take: name not in take, opts)
            placed.update(dict.fromkeys(take, p))
            break
    return [{"module": n, "precision": placed.get(n, "bf16"), "reason": f"{precision}: {why}"}
            for n, why in refused.items()]


def apply_quant_config(model: nn.Module, quant_config: dict, device: str | None = None,
                       substitute: bool = True) -> nn.Module:
    """Re-apply a registered quantization config to a freshly loaded (unquantized) model.

    Serving loads the base weights with ``from_pretrained`` and calls this, so the served
    model is quantized as the search measured it (load-time quantization). ``device``
    defaults to the device the model is on. When the config's backend cannot run there (a
    config measured on CPU, served on a GPU, or the reverse) and ``substitute`` is true, the
    best usable backend of the *same precision* and the same kept modules is used instead,
    with a warning; otherwise, or when the precision cannot run at all, ConfigError.
    The result is on ``model.rightsizer_quant`` (a QuantInfo; ``substituted_from`` says
    when the backend changed).
    """
    if not isinstance(quant_config, dict):
        raise ConfigError(f"quant_config: expected a dict, got {type(quant_config).__name__}")
    problems = [f"quant_config: missing {k!r}" for k in ("precision", "backend") if k not in quant_config]
    version = quant_config.get("version", QUANT_CONFIG_VERSION)
    if version != QUANT_CONFIG_VERSION:
        problems.append(f"quant_config.version: {version!r}; this library reads version {QUANT_CONFIG_VERSION}")
    if quant_config.get("pre_quantized"):
        problems.append("quant_config: a pre-quantized (GPTQ/AWQ) model loads quantized with "
                        "from_pretrained; there is nothing to apply")
    if problems:
        raise ConfigError(problems)
    if device is None:
        first = next(iter(model.parameters()), None)
        device = "cpu" if first is None or first.device.type != "cuda" else str(first.device)
    dev = normalize_device(device)
    precision, backend = quant_config["precision"], quant_config["backend"]
    substituted_from = None
    if backend in BACKENDS and BACKENDS[backend].precision == precision:
        reason = BACKENDS[backend].check(dev)
        if reason is not None and substitute:
            replacement = resolve_backend(precision, None, dev)  # ConfigError if none runs here
            warnings.warn(f"quant_config backend {backend} cannot run on {dev} ({reason}); "
                          f"using {replacement.name} for {precision}", stacklevel=2)
            substituted_from, backend = backend, replacement.name
    group = quant_config.get("group_size") if substituted_from is None else None
    info = quantize_model(model, precision, backend=backend,
                          skip_modules=quant_config.get("skip_modules") or None, device=dev,
                          group_size=group, dtype=quant_config.get("dtype", "bfloat16"),
                          skip_precision=quant_config.get("skip_precision", "bf16"))
    info.substituted_from = substituted_from
    model.rightsizer_quant = info
    return model
