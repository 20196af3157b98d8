"""The runtime target of a step: where its models load and in which dtypes, from the hardware.

One answer per step, used by every load in it (select's candidates, evaluate's chosen model and
baseline, quantize, the trainer, the retrieval encoder, serving), so the candidates and the
baseline are measured on the same target and the records say what that was:

- a CUDA GPU: bf16 weights and compute where the GPU has bf16 (compute capability >= 8.0),
  fp16 on older ones (T4, V100); a MIG slice is recognised and named as the catalog names it
  (``A100-40GB MIG 1g.10gb``);
- a CPU: fp32 weights (the precision the ladder's scores were measured in everywhere so far),
  and bf16 compute only where the CPU has bf16 matrix units (AVX512-BF16 or AMX) and torch
  dispatches its AVX-512 kernels; without them bf16 arithmetic is emulated, slower than fp32
  and no more accurate.

``describe_device`` reads what the hardware reports; ``target_for`` is the rule, a pure
function of that description (tested on descriptions of GPUs this machine does not have);
``resolve_target`` is both. A step's ``dtype`` parameter overrides the weights' dtype (a
user who wants bf16 on a CPU, or a test that checks the target reaches every load).
"""

from __future__ import annotations

import platform
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
PRECISION = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}  # rightsizer.precisions names
MIG_NAME = re.compile(r"\s+MIG\s+(\d+g\.\d+gb)\s*$", re.I)


@dataclass(frozen=True)
class DeviceInfo:
    """What the hardware reports about the device a step runs on."""

    kind: str  # "cuda" or "cpu"
    name: str  # torch's device name ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB MIG 1g.10gb"), or the CPU model
    capability: tuple[int, int] | None = None  # CUDA compute capability
    memory_bytes: int | None = None
    cpu_bf16: bool = False  # a CPU with bf16 matrix units (avx512_bf16 or amx_bf16)
    index: int = 0  # CUDA device index


@dataclass(frozen=True)
class RuntimeTarget:
    """Where a step's models load and in which dtypes."""

    device: str  # "cuda:0" or "cpu"
    dtype: str  # the weights' dtype: float32, bfloat16 or float16
    compute_dtype: str  # 4-bit and QLoRA compute dtype
    device_name: str  # as the hardware names it
    catalog_name: str | None  # as the GPU catalog names it (a MIG slice included); None: not in it
    mig: str | None = None  # the MIG profile, on a MIG slice
    reason: str = ""

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def torch_compute_dtype(self) -> torch.dtype:
        return DTYPES[self.compute_dtype]

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def precision(self) -> str:
        """The weights' dtype as ``rightsizer.precisions`` names it (fp32, bf16, fp16)."""
        return PRECISION[self.dtype]

    @property
    def measured_on(self) -> str:
        """The device a measurement on this target ran on: the catalog's name, else the hardware's."""
        return self.catalog_name or self.device_name

    @property
    def summary(self) -> str:
        """One line for a run's results: ``"<measured on> (<device>, <dtype>)"``."""
        return f"{self.measured_on} ({self.device}, {self.dtype})"

    def to_dict(self) -> dict:
        return {**asdict(self), "precision": self.precision, "measured_on": self.measured_on}


def dtype_name(value: str | torch.dtype) -> str:
    """``float32``/``bfloat16``/``float16`` from a name, an alias (fp32, bf16, fp16) or a torch dtype."""
    if isinstance(value, torch.dtype):
        for name, dt in DTYPES.items():
            if dt == value:
                return name
    name = ALIASES.get(str(value).lower(), str(value).lower())
    if name not in DTYPES:
        raise ValueError(f"dtype: {value!r}; expected one of {sorted(DTYPES)} (or fp32, bf16, fp16)")
    return name


def _cpu_info() -> tuple[str, bool]:
    """(model name, bf16 matrix units torch will use) from /proc/cpuinfo and torch's kernel
    level; (the platform's name, False) elsewhere.

    The units count only when torch dispatches AVX-512 kernels: under
    ``ATEN_CPU_CAPABILITY=default`` or ``avx2`` (the stand-ins for another CPU) bf16 would be
    emulated, so the step computes in fp32, as it would on a CPU without the units.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "cpu", False
    name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "cpu")
    flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))
    return name, bool(flags & {"avx512_bf16", "amx_bf16"}) and _dispatches_avx512()


def _dispatches_avx512() -> bool:
    return torch.backends.cpu.get_cpu_capability().upper().startswith("AVX512")


def describe_device(device: str = "auto") -> DeviceInfo:
    """The device a step would run on (``"auto"``: the first CUDA GPU when there is one)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r}, but no CUDA GPU is visible to this process")
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        return DeviceInfo("cuda", torch.cuda.get_device_name(index), tuple(torch.cuda.get_device_capability(index)),
                          int(props.total_memory), index=index)
    if device != "cpu":
        raise ValueError(f"device: {device!r}; expected auto, cpu or cuda[:N]")
    name, bf16 = _cpu_info()
    return DeviceInfo("cpu", name, cpu_bf16=bf16)


def catalog_device(device_name: str, catalog=None):
    """The catalog's entry for a device as torch names it ("NVIDIA H200" -> H200; a MIG slice,
    "NVIDIA A100-SXM4-40GB MIG 1g.10gb", -> the A100-40GB's 1g.10gb slice), or None."""
    from rightsizer.sizing import default_catalog

    catalog = catalog or default_catalog()
    name = device_name.strip()
    mig = MIG_NAME.search(name)
    name = MIG_NAME.sub("", name)
    name = re.sub(r"^(NVIDIA|AMD)\s+", "", name, flags=re.I)
    for candidate in (name, name.replace(" ", "-"), name.split(" ")[0]):
        if candidate and candidate in catalog:
            gpu = catalog.get(candidate)
            if mig is None:
                return gpu
            try:
                return gpu.slice(mig.group(1))
            except Exception:  # noqa: BLE001 - a profile the catalog does not list: not in it
                return None
    return None


def target_for(info: DeviceInfo, dtype: str = "auto", catalog=None) -> RuntimeTarget:
    """The runtime target for a described device (see the module's rules); ``dtype`` overrides
    the weights' dtype."""
    entry = catalog_device(info.name, catalog) if info.kind == "cuda" else None
    mig = MIG_NAME.search(info.name)
    if info.kind == "cuda":
        bf16 = info.capability is not None and tuple(info.capability) >= (8, 0)
        auto = "bfloat16" if bf16 else "float16"
        cc = f"{info.capability[0]}.{info.capability[1]}" if info.capability else "unknown"
        reason = (f"CUDA, compute capability {cc}: " + ("bf16" if bf16 else "no bf16 (needs 8.0): fp16"))
        compute = auto
        device = f"cuda:{info.index}"
    else:
        auto = "float32"
        compute = "bfloat16" if info.cpu_bf16 else "float32"
        reason = ("CPU: fp32 weights; bf16 compute (the CPU has bf16 matrix units)" if info.cpu_bf16 else
                  "CPU without bf16 matrix units (AVX512-BF16/AMX): fp32 weights and compute")
        device = "cpu"
    chosen = auto if dtype == "auto" else dtype_name(dtype)
    if chosen != auto:
        reason += f"; weights in {chosen} as asked (dtype={dtype})"
    return RuntimeTarget(device=device, dtype=chosen, compute_dtype=compute, device_name=info.name,
                         catalog_name=entry.label if entry is not None else None,
                         mig=mig.group(1) if mig else None, reason=reason)


def resolve_target(device: str = "auto", dtype: str = "auto") -> RuntimeTarget:
    """The runtime target of this process's device (``describe_device`` then ``target_for``)."""
    return target_for(describe_device(device), dtype)


def with_dtype(target: RuntimeTarget, dtype: str) -> RuntimeTarget:
    """``target`` with its weights in ``dtype`` (a quantized model's own dtype, for instance)."""
    return replace(target, dtype=dtype_name(dtype))
