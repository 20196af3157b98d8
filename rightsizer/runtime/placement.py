"""Device map and offload plan: where each block lives when the model does not fit.

``plan_placement`` turns a memory budget (bytes per GPU, CPU RAM, and the bytes the sizing
engine reserves per GPU for the KV cache and activations) into the ``device_map`` and
``max_memory`` that ``from_pretrained`` takes, using accelerate's ``infer_auto_device_map``
on an empty (meta) copy of the model. Layers go to the GPUs first, then to CPU RAM, then to
disk (``offload_folder``); a transformer block is never split. The inference core loads a
model with the plan (``rightsizer.inference.load_model(ref, placement=plan)``). Offloaded
layers are streamed to the execution device per forward: slow, but correct, which the tests
check against the unplaced model.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from rightsizer.errors import ConfigError, InsufficientMemory

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class PlacementPlan:
    """A device map, the memory limits it was derived from, and a summary."""

    device_map: dict[str, str | int]
    max_memory: dict[str | int, int]
    offload_folder: str | None
    weight_bytes: int
    bytes_per_device: dict[str, int] = field(default_factory=dict)
    dtype: str = "bfloat16"

    @property
    def offloaded(self) -> bool:
        """Whether any weights live off the GPUs (in CPU RAM on a GPU machine, or on disk)."""
        devices = set(map(str, self.device_map.values()))
        has_gpu = any(d.isdigit() or d.startswith("cuda") for d in devices)
        return bool(self.on_disk) or (has_gpu and "cpu" in devices)

    @property
    def on_disk(self) -> list[str]:
        """The modules the map leaves on disk (streamed from the offload folder per forward)."""
        return [k for k, v in self.device_map.items() if str(v) == "disk"]

    def from_pretrained_kwargs(self) -> dict:
        """Keyword arguments for ``AutoModelForCausalLM.from_pretrained``."""
        kw = {"device_map": dict(self.device_map), "max_memory": dict(self.max_memory),
              "dtype": _DTYPES[self.dtype]}
        if self.offload_folder:
            kw["offload_folder"] = self.offload_folder
        return kw

    def to_dict(self) -> dict:
        d = asdict(self)
        d["max_memory"] = {str(k): v for k, v in self.max_memory.items()}
        d["device_map"] = {k: str(v) for k, v in self.device_map.items()}
        d["offloaded"] = self.offloaded
        return d


def _empty_model(model_or_config, dtype: torch.dtype) -> nn.Module:
    if isinstance(model_or_config, nn.Module):
        return model_or_config
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM, PretrainedConfig

    config = model_or_config
    if isinstance(config, str):
        from rightsizer.models import load_config

        config = load_config(config)
    if not isinstance(config, PretrainedConfig):
        raise ConfigError(f"model: expected a model, a config or a candidate reference, got {type(config).__name__}")
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.tie_weights()  # tied weights must share one device in the map (accelerate checks)
    return model


def _no_split_classes(model: nn.Module) -> list[str]:
    names = getattr(model, "_no_split_modules", None) or []
    return list(names)


def plan_placement(model_or_config, gpu_bytes: int | list[int] | None = None, cpu_bytes: int | None = None,
                   reserve_bytes: int = 0, offload_folder: str | os.PathLike | None = None,
                   dtype: str = "bfloat16", allow_disk: bool = True) -> PlacementPlan:
    """Plan where the weights go under a memory budget.

    ``gpu_bytes``: memory per GPU (one int, or one per GPU); None or 0 for a CPU-only plan.
    ``reserve_bytes``: per GPU, kept free for KV cache and activations (the sizing engine's
    memory plan). ``cpu_bytes``: RAM for offloaded weights (None: no CPU limit).
    Whatever does not fit goes to disk under ``offload_folder`` (needed then), unless
    ``allow_disk`` is False, which raises InsufficientMemory instead.
    """
    from accelerate.utils import compute_module_sizes, infer_auto_device_map

    problems = []
    if dtype not in _DTYPES:
        problems.append(f"dtype: {dtype!r}; expected one of {sorted(_DTYPES)}")
    gpus = [] if not gpu_bytes else ([gpu_bytes] if isinstance(gpu_bytes, int) else list(gpu_bytes))
    if any(not isinstance(g, int) or g <= 0 for g in gpus):
        problems.append(f"gpu_bytes: {gpu_bytes!r}; expected positive integers")
    if cpu_bytes is not None and (not isinstance(cpu_bytes, int) or cpu_bytes < 0):
        problems.append(f"cpu_bytes: {cpu_bytes!r}; expected a non-negative integer")
    if not isinstance(reserve_bytes, int) or reserve_bytes < 0:
        problems.append(f"reserve_bytes: {reserve_bytes!r}; expected a non-negative integer")
    if problems:
        raise ConfigError(problems)
    model = _empty_model(model_or_config, _DTYPES[dtype])
    sizes = compute_module_sizes(model, dtype=_DTYPES[dtype])
    total = int(sizes[""])
    max_memory: dict[str | int, int] = {}
    for i, g in enumerate(gpus):
        usable = g - reserve_bytes
        if usable <= 0:
            raise InsufficientMemory(f"GPU {i}: {g} bytes leave nothing for weights after reserving "
                                     f"{reserve_bytes} bytes for KV cache and activations")
        max_memory[i] = usable
    max_memory["cpu"] = cpu_bytes if cpu_bytes is not None else max(total * 2, 1 << 30)
    device_map = infer_auto_device_map(model, max_memory=dict(max_memory),
                                       no_split_module_classes=_no_split_classes(model),
                                       dtype=_DTYPES[dtype])
    used: dict[str, int] = {}
    for name, dev in device_map.items():
        used[str(dev)] = used.get(str(dev), 0) + int(sizes.get(name, 0))
    folder = None
    if "disk" in map(str, device_map.values()):
        if not allow_disk:
            raise InsufficientMemory(f"the weights ({total} bytes) do not fit in GPU {gpus} "
                                     f"(less {reserve_bytes} reserved each) and CPU {cpu_bytes} bytes, "
                                     "and disk offload is off")
        if offload_folder is None:
            raise ConfigError("offload_folder: the plan offloads weights to disk, so it needs a folder")
        folder = str(offload_folder)
    return PlacementPlan(device_map=dict(device_map), max_memory=max_memory, offload_folder=folder,
                         weight_bytes=total, bytes_per_device=used, dtype=dtype)
