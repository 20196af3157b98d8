"""GPU catalog: frozen dataclasses loaded from ``rightsizer/data/gpus.yaml`` and validated.

``load_catalog()`` reads the packaged file (or another path), merges user entries
(``extra``: a new GPU, or ``{"name": "H100-SXM", "price_per_hour": 2.5}`` to override a
field), validates everything and raises one ``ConfigError`` listing every problem.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator

import yaml

from rightsizer.errors import ConfigError
from rightsizer.precisions import FEATURE_MIN_CC

DEFAULT_CATALOG_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "gpus.yaml")

# Every feature but mig (which comes from the listed mig_profiles) is derived from the compute
# capability with the thresholds of rightsizer.precisions.FEATURE_MIN_CC (sources there).
FEATURES = ("bf16", "flash_attention_2", "fp8", "mig", "bnb", "gptq", "awq")

_REQUIRED_NUMBERS = ("memory_bytes", "memory_bandwidth", "fp16_flops", "fp32_flops",
                     "host_link_bandwidth", "interconnect_bandwidth", "price_per_hour")
_OPTIONAL_NUMBERS = ("bf16_flops", "int8_flops", "fp8_flops")
_KNOWN_KEYS = set(_REQUIRED_NUMBERS) | set(_OPTIONAL_NUMBERS) | {
    "name", "vendor", "aliases", "form_factor", "compute_capability", "features", "max_count",
    "spec_source", "price_source", "mig_profiles", "notes"}


@dataclass(frozen=True)
class MigProfile:
    """One MIG instance profile: its memory, and its share of compute and bandwidth."""

    name: str
    memory_bytes: int
    compute_fraction: float
    bandwidth_fraction: float
    max_instances: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "memory_bytes": self.memory_bytes, "compute_fraction": self.compute_fraction,
                "bandwidth_fraction": self.bandwidth_fraction, "max_instances": self.max_instances}


@dataclass(frozen=True)
class GPU:
    """Datasheet figures of one accelerator, in base units (bytes, bytes/s, FLOP/s, USD/h)."""

    name: str
    vendor: str
    memory_bytes: int
    memory_bandwidth: float
    bf16_flops: float
    fp16_flops: float
    int8_flops: float
    fp8_flops: float
    fp32_flops: float
    host_link_bandwidth: float
    interconnect_bandwidth: float
    price_per_hour: float
    compute_capability: str | None = None
    features: dict[str, bool] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    form_factor: str = ""
    max_count: int = 8
    spec_source: str = ""
    price_source: str = ""
    mig_profiles: tuple[MigProfile, ...] = ()
    mig: str | None = None  # set on the view returned by ``slice()``

    def supports(self, feature: str) -> bool:
        return bool(self.features.get(feature, False))

    @property
    def label(self) -> str:
        return f"{self.name} MIG {self.mig}" if self.mig else self.name

    def peak_flops(self, compute: str) -> float:
        """Dense peak for a compute dtype: fp32, bf16/fp16, int8 or fp8 (0 when unsupported)."""
        if compute == "bf16":
            return self.bf16_flops or self.fp16_flops
        return {"fp16": self.fp16_flops, "fp32": self.fp32_flops, "int8": self.int8_flops,
                "fp8": self.fp8_flops}[compute]

    def ridge_point(self, compute: str = "bf16") -> float:
        """Arithmetic intensity (FLOP/byte) above which a kernel is compute-bound."""
        return self.peak_flops(compute) / self.memory_bandwidth

    def mig_profile(self, name: str) -> MigProfile:
        for prof in self.mig_profiles:
            if prof.name.lower() == name.lower():
                return prof
        if not self.mig_profiles:
            raise ConfigError(f"{self.name} has no MIG profiles (MIG needs an A100, H100 or H200)")
        raise ConfigError(
            f"unknown MIG profile {name!r} for {self.name}; known: {', '.join(p.name for p in self.mig_profiles)}")

    def slice(self, profile: str) -> "GPU":
        """A view of one MIG instance: its memory, a share of compute and bandwidth, pro-rata price."""
        prof = self.mig_profile(profile)
        c, b = prof.compute_fraction, prof.bandwidth_fraction
        return replace(
            self, memory_bytes=prof.memory_bytes, memory_bandwidth=self.memory_bandwidth * b,
            bf16_flops=self.bf16_flops * c, fp16_flops=self.fp16_flops * c, int8_flops=self.int8_flops * c,
            fp8_flops=self.fp8_flops * c, fp32_flops=self.fp32_flops * c,
            price_per_hour=self.price_per_hour * c, max_count=1, mig_profiles=(), mig=prof.name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "vendor": self.vendor, "form_factor": self.form_factor,
            "compute_capability": self.compute_capability, "memory_bytes": self.memory_bytes,
            "memory_bandwidth": self.memory_bandwidth, "bf16_flops": self.bf16_flops,
            "fp16_flops": self.fp16_flops, "int8_flops": self.int8_flops, "fp8_flops": self.fp8_flops,
            "fp32_flops": self.fp32_flops, "host_link_bandwidth": self.host_link_bandwidth,
            "interconnect_bandwidth": self.interconnect_bandwidth, "max_count": self.max_count,
            "price_per_hour": self.price_per_hour, "price_source": self.price_source,
            "spec_source": self.spec_source, "features": dict(self.features),
            "mig_profiles": [p.to_dict() for p in self.mig_profiles], "aliases": list(self.aliases),
        }


def _key(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


@dataclass(frozen=True)
class Catalog:
    """GPUs by name, plus the default efficiency factors stored beside them."""

    gpus: tuple[GPU, ...]
    efficiency: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __iter__(self) -> Iterator[GPU]:
        return iter(self.gpus)

    def __len__(self) -> int:
        return len(self.gpus)

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.gpus]

    def get(self, name: str | GPU) -> GPU:
        """Look a GPU up by name or alias (case, dashes and spaces ignored)."""
        if isinstance(name, GPU):
            return name
        wanted = _key(name)
        for gpu in self.gpus:
            if wanted == _key(gpu.name) or wanted in {_key(a) for a in gpu.aliases}:
                return gpu
        raise ConfigError(f"unknown GPU {name!r}; known GPUs: {', '.join(self.names)}")

    def __contains__(self, name: object) -> bool:
        try:
            self.get(name)  # type: ignore[arg-type]
            return True
        except ConfigError:
            return False

    def with_prices(self, prices: dict[str, float]) -> "Catalog":
        """A copy with some prices overridden ({gpu name: USD per hour})."""
        return load_catalog(data={"efficiency": self.efficiency,
                                  "gpus": [g.to_dict() for g in self.gpus]},
                            extra=[{"name": n, "price_per_hour": p} for n, p in prices.items()])


# --------------------------------------------------------------------------- validation


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _validate_entry(raw: Any, index: int, problems: list[str]) -> GPU | None:
    where = f"gpus[{index}]"
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping, got {type(raw).__name__}")
        return None
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{where}: 'name' is required and must be a non-empty string")
        name = f"<{where}>"
    where = f"GPU {name}"
    before = len(problems)
    for key in sorted(set(raw) - _KNOWN_KEYS):
        problems.append(f"{where}: unknown field {key!r} (known: {', '.join(sorted(_KNOWN_KEYS))})")
    for key in _REQUIRED_NUMBERS:
        if key not in raw:
            problems.append(f"{where}: missing required field {key!r}")
        elif not _is_number(raw[key]) or raw[key] < 0 or (raw[key] == 0 and key != "price_per_hour"):
            problems.append(f"{where}: {key} must be a positive number, got {raw[key]!r}")
    for key in _OPTIONAL_NUMBERS:
        if key in raw and (not _is_number(raw[key]) or raw[key] < 0):
            problems.append(f"{where}: {key} must be a number >= 0, got {raw[key]!r}")
    if "price_per_hour" in raw and not raw.get("price_source"):
        problems.append(f"{where}: price_per_hour needs a price_source (URL or 'user')")
    vendor = raw.get("vendor", "nvidia")
    cc = raw.get("compute_capability")
    cc_value = None
    if cc is not None:
        try:
            cc_value = float(str(cc))
        except ValueError:
            problems.append(f"{where}: compute_capability must look like '8.0', got {cc!r}")
    elif vendor == "nvidia":
        problems.append(f"{where}: NVIDIA GPUs need a compute_capability")
    explicit = raw.get("features") or {}
    if not isinstance(explicit, dict) or any(k not in FEATURES or not isinstance(v, bool)
                                             for k, v in explicit.items()):
        problems.append(f"{where}: features must map some of {', '.join(FEATURES)} to true/false")
        explicit = {}
    max_count = raw.get("max_count", 8)
    if not isinstance(max_count, int) or isinstance(max_count, bool) or max_count < 1:
        problems.append(f"{where}: max_count must be a positive integer, got {max_count!r}")

    profiles: list[MigProfile] = []
    for j, prof in enumerate(raw.get("mig_profiles") or []):
        pw = f"{where} mig_profiles[{j}]"
        if not isinstance(prof, dict):
            problems.append(f"{pw}: must be a mapping")
            continue
        missing = [k for k in ("name", "memory_bytes", "compute_fraction", "bandwidth_fraction", "max_instances")
                   if k not in prof]
        if missing:
            problems.append(f"{pw}: missing {', '.join(missing)}")
            continue
        ok = True
        for k in ("compute_fraction", "bandwidth_fraction"):
            if not _is_number(prof[k]) or not 0 < prof[k] <= 1:
                problems.append(f"{pw} ({prof['name']}): {k} must be in (0, 1], got {prof[k]!r}")
                ok = False
        mem = prof["memory_bytes"]
        if not _is_number(mem) or mem <= 0 or (_is_number(raw.get("memory_bytes")) and mem > raw["memory_bytes"]):
            problems.append(f"{pw} ({prof['name']}): memory_bytes must be positive and at most the GPU's memory")
            ok = False
        if ok:
            profiles.append(MigProfile(str(prof["name"]), int(mem), float(prof["compute_fraction"]),
                                       float(prof["bandwidth_fraction"]), int(prof["max_instances"])))
    if profiles and cc_value is not None and cc_value < 8.0:
        problems.append(f"{where}: MIG needs compute capability >= 8.0, this GPU has {cc}")
    if len(problems) > before:
        return None

    features = {f: (cc_value is not None and cc_value >= need) for f, need in FEATURE_MIN_CC.items()}
    features["mig"] = bool(profiles)
    features.update(explicit)
    if raw.get("fp8_flops", 0) and not features["fp8"]:
        problems.append(f"{where}: fp8_flops is set but the GPU does not support fp8 (compute capability {cc})")
        return None
    if features["fp8"] and not raw.get("fp8_flops"):
        problems.append(f"{where}: supports fp8 but has no fp8_flops")
        return None
    bf16 = raw.get("bf16_flops", 0) or 0
    if features["bf16"] and not bf16:
        problems.append(f"{where}: supports bf16 (cc >= 8.0) but has no bf16_flops")
        return None
    aliases = raw.get("aliases") or []
    return GPU(
        name=name, vendor=str(vendor), memory_bytes=int(raw["memory_bytes"]),
        memory_bandwidth=float(raw["memory_bandwidth"]), bf16_flops=float(bf16),
        fp16_flops=float(raw["fp16_flops"]), int8_flops=float(raw.get("int8_flops", 0) or 0),
        fp8_flops=float(raw.get("fp8_flops", 0) or 0), fp32_flops=float(raw["fp32_flops"]),
        host_link_bandwidth=float(raw["host_link_bandwidth"]),
        interconnect_bandwidth=float(raw["interconnect_bandwidth"]),
        price_per_hour=float(raw["price_per_hour"]), compute_capability=None if cc is None else str(cc),
        features=features, aliases=tuple(str(a) for a in aliases), form_factor=str(raw.get("form_factor", "")),
        max_count=int(max_count), spec_source=str(raw.get("spec_source", "")),
        price_source=str(raw.get("price_source", "")), mig_profiles=tuple(profiles))


def _merge_extra(entries: list[Any], extra: Iterable[dict[str, Any]], problems: list[str]) -> list[Any]:
    merged = [dict(e) if isinstance(e, dict) else e for e in entries]
    for item in extra:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            problems.append(f"extra GPU entry must be a mapping with a 'name', got {item!r}")
            continue
        target = next((e for e in merged if isinstance(e, dict) and (
            _key(e.get("name", "")) == _key(item["name"])
            or _key(item["name"]) in {_key(a) for a in e.get("aliases") or []})), None)
        if target is None:
            entry = dict(item)
            if "price_per_hour" in entry:
                entry.setdefault("price_source", "user")
            merged.append(entry)
        else:
            update = {k: v for k, v in item.items() if k != "name"}
            if "price_per_hour" in update and "price_source" not in update:
                update["price_source"] = "user override"
            target.update(update)
    return merged


def load_catalog(path: str | os.PathLike | None = None, extra: list[dict[str, Any]] | None = None,
                 *, data: dict[str, Any] | None = None) -> Catalog:
    """Load and validate a GPU catalog (default: the packaged ``rightsizer/data/gpus.yaml``).

    ``extra`` adds GPUs or overrides fields of existing ones (e.g. a negotiated price).
    Raises ``ConfigError`` listing every problem found.
    """
    source = "<data>" if data is not None else os.fspath(path or DEFAULT_CATALOG_PATH)
    if data is None:
        try:
            with open(source, encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read GPU catalog: {exc}", source=source) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"GPU catalog is not valid YAML: {exc}", source=source) from None
    if not isinstance(data, dict) or not isinstance(data.get("gpus"), list):
        raise ConfigError("GPU catalog must be a mapping with a 'gpus' list", source=source)
    problems: list[str] = []
    entries = _merge_extra(data["gpus"], extra or [], problems)
    gpus: list[GPU] = []
    seen: dict[str, str] = {}
    for i, raw in enumerate(entries):
        if isinstance(raw, dict) and isinstance(raw.get("name"), str):
            aliases = raw.get("aliases") if isinstance(raw.get("aliases"), list) else []
            for key in [raw["name"], *aliases]:
                if _key(key) in seen:
                    problems.append(f"GPU {raw['name']}: name or alias {key!r} already used by {seen[_key(key)]}")
                seen[_key(key)] = raw["name"]
        gpu = _validate_entry(raw, i, problems)
        if gpu is not None:
            gpus.append(gpu)
    efficiency = data.get("efficiency") or {}
    if not isinstance(efficiency, dict):
        problems.append("efficiency must be a mapping of factor name to {value, source}")
        efficiency = {}
    for key, entry in efficiency.items():
        if not isinstance(entry, dict) or "value" not in entry or not entry.get("source"):
            problems.append(f"efficiency.{key} must have a value and a source")
    if problems:
        raise ConfigError(problems, source=source)
    return Catalog(gpus=tuple(gpus), efficiency=efficiency, source=source)


_DEFAULT: Catalog | None = None


def default_catalog() -> Catalog:
    """The packaged catalog, loaded once."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = load_catalog()
    return _DEFAULT
