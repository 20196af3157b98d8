"""Device catalog: frozen dataclasses loaded from ``rightsizer/data/gpus.yaml`` and validated.

The file lists GPUs (``gpus``) and CPU instance types (``cpus``); both become :class:`GPU`
entries (``kind`` "gpu" or "cpu") that the same estimator sizes. Prices come from one price
list (``rightsizer.sizing.prices``, default :data:`DEFAULT_PRICE_LIST`).

``load_catalog()`` reads the packaged file (or another path), applies the price list, merges
user entries (``extra``: a new device, or ``{"name": "H100-SXM", "price_per_hour": 2.5}`` to
override a field), validates everything and raises one ``ConfigError`` listing every problem.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator

from rightsizer.schema.check import is_number
from rightsizer.errors import ConfigError
from rightsizer.schema.catalog import CpuEntry, GpuEntry, field_names, required_names
from rightsizer.precisions import FEATURE_MIN_CC
from rightsizer.sizing.prices import DEFAULT_PRICE_LIST, PriceList, load_price_list
from rightsizer.yamlio import read_yaml

DEFAULT_CATALOG_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "gpus.yaml")

# Every feature but mig (which comes from the listed mig_profiles) is derived from the compute
# capability with the thresholds of rightsizer.precisions.FEATURE_MIN_CC (sources there).
FEATURES = ("bf16", "flash_attention_2", "fp8", "mig", "bnb", "gptq", "awq")

# The entries' fields: the file format's types (rightsizer.schema.catalog, one home).
_REQUIRED_NUMBERS = required_names(GpuEntry)
_OPTIONAL_NUMBERS = ("bf16_flops", "int8_flops", "fp8_flops")
_KNOWN_KEYS = field_names(GpuEntry)

# CPU instance types: fewer datasheet numbers (no tensor cores, no GPU links).
_CPU_REQUIRED = required_names(CpuEntry)
_CPU_KNOWN = field_names(CpuEntry)
# What the CPU serving path runs (torch on CPU): bf16, int8/int4 weight-only (torchao,
# quanto), SDPA attention; no fp8 kernels, no FlashAttention-2, no MIG, no GPTQ kernels.
CPU_FEATURES = {"bf16": True, "flash_attention_2": False, "fp8": False, "mig": False, "bnb": True,
                "gptq": False, "awq": True}


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
    price_per_hour: float = math.nan  # from the price list; NaN: not offered under it
    compute_capability: str | None = None
    features: dict[str, bool] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    form_factor: str = ""
    max_count: int = 8
    spec_source: str = ""
    price_source: str = ""
    mig_profiles: tuple[MigProfile, ...] = ()
    mig: str | None = None  # set on the view returned by ``slice()``
    kind: str = "gpu"  # "gpu" or "cpu" (a CPU instance type)
    vcpus: int = 0  # CPU instances: vCPUs of the instance
    product_label: str = ""  # nvidia.com/gpu.product node label value (GPU feature discovery)
    mig_price_rule: str = "compute_share"  # from the price list (rightsizer.sizing.prices.MIG_RULES)
    price_list: str = ""  # the list the price comes from ("" for a user price)

    @property
    def priced(self) -> bool:
        """True when the price list (or the user) gives this device a price."""
        return _is_number(self.price_per_hour) and self.price_per_hour >= 0

    @property
    def is_cpu(self) -> bool:
        return self.kind == "cpu"

    def supports(self, feature: str) -> bool:
        return bool(self.features.get(feature, False))

    @property
    def label(self) -> str:
        return f"{self.name} MIG {self.mig}" if self.mig else self.name

    def slice_price(self, prof: MigProfile) -> float:
        """A MIG slice's price by the price list's rule (see ``rightsizer.sizing.prices.MIG_RULES``)."""
        share = prof.memory_bytes / self.memory_bytes if self.mig_price_rule == "memory_share" \
            else prof.compute_fraction
        return self.price_per_hour * share

    def peak_flops(self, compute: str) -> float:
        """Dense peak for a compute dtype: fp32, bf16/fp16, int8 or fp8 (0 when unsupported)."""
        if compute == "bf16":
            return self.bf16_flops or self.fp16_flops
        return {"fp16": self.fp16_flops, "fp32": self.fp32_flops, "int8": self.int8_flops,
                "fp8": self.fp8_flops}[compute]

    def mig_profile(self, name: str) -> MigProfile:
        for prof in self.mig_profiles:
            if prof.name.lower() == name.lower():
                return prof
        if not self.mig_profiles:
            raise ConfigError(f"{self.name} has no MIG profiles (MIG needs an A100, H100 or H200)")
        raise ConfigError(
            f"unknown MIG profile {name!r} for {self.name}; known: {', '.join(p.name for p in self.mig_profiles)}")

    def slice(self, profile: str) -> "GPU":
        """A view of one MIG instance: its memory, a share of compute and bandwidth, and its price
        by the price list's MIG rule (its share of the GPU's compute slices by default)."""
        prof = self.mig_profile(profile)
        c, b = prof.compute_fraction, prof.bandwidth_fraction
        return replace(
            self, memory_bytes=prof.memory_bytes, memory_bandwidth=self.memory_bandwidth * b,
            bf16_flops=self.bf16_flops * c, fp16_flops=self.fp16_flops * c, int8_flops=self.int8_flops * c,
            fp8_flops=self.fp8_flops * c, fp32_flops=self.fp32_flops * c,
            price_per_hour=self.slice_price(prof), max_count=1, mig_profiles=(), mig=prof.name)

    def to_dict(self) -> dict[str, Any]:
        if self.is_cpu:
            return {"name": self.name, "kind": "cpu", "vendor": self.vendor, "vcpus": self.vcpus,
                    "memory_bytes": self.memory_bytes, "memory_bandwidth": self.memory_bandwidth,
                    "fp32_flops": self.fp32_flops, "bf16_flops": self.bf16_flops, "int8_flops": self.int8_flops,
                    "spec_source": self.spec_source, "price_per_hour": self.price_per_hour,
                    "price_source": self.price_source, "price_list": self.price_list,
                    "features": dict(self.features), "aliases": list(self.aliases)}
        return {
            "name": self.name, "kind": "gpu", "vendor": self.vendor, "form_factor": self.form_factor,
            "compute_capability": self.compute_capability, "memory_bytes": self.memory_bytes,
            "memory_bandwidth": self.memory_bandwidth, "bf16_flops": self.bf16_flops,
            "fp16_flops": self.fp16_flops, "int8_flops": self.int8_flops, "fp8_flops": self.fp8_flops,
            "fp32_flops": self.fp32_flops, "host_link_bandwidth": self.host_link_bandwidth,
            "interconnect_bandwidth": self.interconnect_bandwidth, "max_count": self.max_count,
            "price_per_hour": self.price_per_hour, "price_source": self.price_source,
            "price_list": self.price_list, "product_label": self.product_label,
            "spec_source": self.spec_source, "features": dict(self.features),
            "mig_profiles": [p.to_dict() for p in self.mig_profiles], "aliases": list(self.aliases),
        }


def _key(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


@dataclass(frozen=True)
class Catalog:
    """GPUs and CPU instance types by name, the default efficiency factors stored beside them,
    and the price list whose prices they carry. Iterating gives the GPUs (what ``recommend``
    ranks); ``cpus`` and ``devices`` add the CPU instance types."""

    gpus: tuple[GPU, ...]
    efficiency: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    cpus: tuple[GPU, ...] = ()
    price_list: PriceList | None = None

    @property
    def devices(self) -> tuple[GPU, ...]:
        return self.gpus + self.cpus

    @property
    def price_list_name(self) -> str:
        return self.price_list.name if self.price_list else ""

    def priced(self, include_cpu: bool = False) -> list[GPU]:
        """The devices with a price (offered under the price list, or priced by the user)."""
        return [d for d in (self.devices if include_cpu else self.gpus) if d.priced]

    def __iter__(self) -> Iterator[GPU]:
        return iter(self.gpus)

    def __len__(self) -> int:
        return len(self.gpus)

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.gpus]

    def get(self, name: str | GPU) -> GPU:
        """Look a GPU or CPU instance type up by name or alias (case, dashes and spaces ignored)."""
        if isinstance(name, GPU):
            return name
        wanted = _key(name)
        for gpu in self.devices:
            if wanted == _key(gpu.name) or wanted in {_key(a) for a in gpu.aliases}:
                return gpu
        cpus = f"; CPU instance types: {', '.join(c.name for c in self.cpus)}" if self.cpus else ""
        raise ConfigError(f"unknown GPU {name!r}; known GPUs: {', '.join(self.names)}{cpus}")

    def __contains__(self, name: object) -> bool:
        try:
            self.get(name)  # type: ignore[arg-type]
            return True
        except ConfigError:
            return False

    def with_prices(self, prices: dict[str, float]) -> "Catalog":
        """A copy with some prices overridden ({device name: USD per hour})."""
        def raw(d: GPU) -> dict[str, Any]:
            out = d.to_dict()
            out.pop("price_list", None)
            out.pop("kind", None)
            if not d.priced or d.price_list:  # the list's prices are applied again
                out.pop("price_per_hour", None)
                out.pop("price_source", None)
            if d.is_cpu:
                out = {k: v for k, v in out.items() if k in _CPU_KNOWN}
            else:
                out["mig_profiles"] = [p.to_dict() for p in d.mig_profiles]
            return out
        return load_catalog(data={"efficiency": self.efficiency, "gpus": [raw(g) for g in self.gpus],
                                  "cpus": [raw(c) for c in self.cpus]},
                            extra=[{"name": n, "price_per_hour": p} for n, p in prices.items()],
                            price_list=self.price_list.path if self.price_list else None)


# --------------------------------------------------------------------------- validation


def _is_number(value: Any) -> bool:
    return is_number(value, finite=True)


def _check_header(raw: Any, section: str, index: int, label: str, known: set, required,
                  problems: list[str]) -> tuple[str, str, int] | None:
    """The checks a GPU and a CPU entry share: a mapping with a name, no unknown fields, the
    required numbers positive. Returns its name, the label problems name it by and how many
    problems there were before its fields were checked (None: not a mapping)."""
    where = f"{section}[{index}]"
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping, got {type(raw).__name__}")
        return None
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{where}: 'name' is required and must be a non-empty string")
        name = f"<{where}>"
    where = f"{label} {name}"
    before = len(problems)
    for key in sorted(set(raw) - known):
        problems.append(f"{where}: unknown field {key!r} (known: {', '.join(sorted(known))})")
    for key in required:
        if key not in raw:
            problems.append(f"{where}: missing required field {key!r}")
        elif not _is_number(raw[key]) or raw[key] <= 0:
            problems.append(f"{where}: {key} must be a positive number, got {raw[key]!r}")
    return name, where, before


def _validate_entry(raw: Any, index: int, problems: list[str]) -> GPU | None:
    header = _check_header(raw, "gpus", index, "GPU", _KNOWN_KEYS, _REQUIRED_NUMBERS, problems)
    if header is None:
        return None
    name, where, before = header
    _check_price(raw, where, problems)
    for key in _OPTIONAL_NUMBERS:
        if key in raw and (not _is_number(raw[key]) or raw[key] < 0):
            problems.append(f"{where}: {key} must be a number >= 0, got {raw[key]!r}")
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
        price_per_hour=float(raw.get("price_per_hour", math.nan)), compute_capability=None if cc is None else str(cc),
        features=features, aliases=tuple(str(a) for a in aliases), form_factor=str(raw.get("form_factor", "")),
        max_count=int(max_count), spec_source=str(raw.get("spec_source", "")),
        price_source=str(raw.get("price_source", "")), mig_profiles=tuple(profiles),
        product_label=str(raw.get("product_label", "")))


def _check_price(raw: dict[str, Any], where: str, problems: list[str]) -> None:
    """A price given in the catalog itself (a user's device) must be a number >= 0 with a source."""
    if "price_per_hour" not in raw:
        return
    value = raw["price_per_hour"]
    if not _is_number(value) or value < 0:
        problems.append(f"{where}: price_per_hour must be a number >= 0 (USD per hour), got {value!r}")
    if not raw.get("price_source"):
        problems.append(f"{where}: price_per_hour needs a price_source (URL or 'user')")


def _validate_cpu(raw: Any, index: int, problems: list[str]) -> GPU | None:
    """A CPU instance type: vCPUs, RAM, memory bandwidth, FLOP/s (and where they come from)."""
    header = _check_header(raw, "cpus", index, "CPU", _CPU_KNOWN, _CPU_REQUIRED, problems)
    if header is None:
        return None
    name, where, before = header
    if isinstance(raw.get("vcpus"), float) or isinstance(raw.get("vcpus"), bool):
        problems.append(f"{where}: vcpus must be an integer, got {raw['vcpus']!r}")
    for key in ("bf16_flops", "int8_flops"):
        if key in raw and (not _is_number(raw[key]) or raw[key] < 0):
            problems.append(f"{where}: {key} must be a number >= 0, got {raw[key]!r}")
    if not raw.get("spec_source"):
        problems.append(f"{where}: spec_source is required (where vCPUs, memory and bandwidth come from)")
    _check_price(raw, where, problems)
    explicit = raw.get("features") or {}
    if not isinstance(explicit, dict) or any(k not in FEATURES or not isinstance(v, bool)
                                             for k, v in explicit.items()):
        problems.append(f"{where}: features must map some of {', '.join(FEATURES)} to true/false")
        explicit = {}
    if len(problems) > before:
        return None
    fp32 = float(raw["fp32_flops"])
    bf16 = float(raw.get("bf16_flops", 0) or 0) or fp32  # no native bf16: runs at the fp32 rate
    bw = float(raw["memory_bandwidth"])
    return GPU(
        name=name, vendor=str(raw.get("vendor", "")), memory_bytes=int(raw["memory_bytes"]), memory_bandwidth=bw,
        bf16_flops=bf16, fp16_flops=bf16, int8_flops=float(raw.get("int8_flops", 0) or 0), fp8_flops=0.0,
        fp32_flops=fp32, host_link_bandwidth=bw, interconnect_bandwidth=bw,
        price_per_hour=float(raw.get("price_per_hour", math.nan)), features={**CPU_FEATURES, **explicit},
        aliases=tuple(str(a) for a in raw.get("aliases") or []), max_count=1,
        spec_source=str(raw.get("spec_source", "")), price_source=str(raw.get("price_source", "")),
        kind="cpu", vcpus=int(raw["vcpus"]))


def _merge_extra(entries: list[Any], extra: Iterable[dict[str, Any]], problems: list[str],
                 cpus: list[Any] | None = None) -> list[Any]:
    """Merge user entries into ``entries`` (GPUs) and ``cpus`` (CPU instance types, in place):
    an entry naming a known device updates it, a new one is added (to ``cpus`` if it has vcpus)."""
    merged = [dict(e) if isinstance(e, dict) else e for e in entries]
    cpu_list = cpus if cpus is not None else []
    for item in extra:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            problems.append(f"extra GPU entry must be a mapping with a 'name', got {item!r}")
            continue
        target = next((e for e in merged + cpu_list if isinstance(e, dict) and (
            _key(e.get("name", "")) == _key(item["name"])
            or _key(item["name"]) in {_key(a) for a in e.get("aliases") or []})), None)
        if target is None:
            entry = dict(item)
            if "price_per_hour" in entry:
                entry.setdefault("price_source", "user")
            (cpu_list if "vcpus" in entry else merged).append(entry)
        else:
            update = {k: v for k, v in item.items() if k != "name"}
            if "price_per_hour" in update and "price_source" not in update:
                update["price_source"] = "user override"
            target.update(update)
    return merged


CATALOG_MAX_ALIASES = 16


def _claim_names(kind: str, raw: Any, seen: dict[str, str], problems: list[str]) -> None:
    """Record an entry's name and aliases in ``seen`` (key -> entry name), with a problem for
    each one another device already uses (GPUs and CPU types share one namespace)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        return  # the entry's own validation names what is wrong with it
    aliases = raw.get("aliases") if isinstance(raw.get("aliases"), list) else []
    for key in [raw["name"], *aliases]:
        if _key(key) in seen:
            problems.append(f"{kind} {raw['name']}: name or alias {key!r} already used by {seen[_key(key)]}")
        seen[_key(key)] = raw["name"]


def load_catalog(path: str | os.PathLike | None = None, extra: list[dict[str, Any]] | None = None,
                 *, data: dict[str, Any] | None = None,
                 price_list: str | os.PathLike | PriceList | None = DEFAULT_PRICE_LIST) -> Catalog:
    """Load and validate a device catalog (default: the packaged ``rightsizer/data/gpus.yaml``).

    ``price_list``: the list whose prices the devices carry (a packaged name, a path, a loaded
    :class:`PriceList`; None: no list, only prices given in the catalog or ``extra``). A device
    the list does not price keeps ``price_per_hour`` NaN: it is not offered under that list.
    ``extra`` adds devices or overrides fields of existing ones (e.g. a negotiated price,
    which then wins over the list). Raises ``ConfigError`` listing every problem found.
    """
    packaged = path is None and data is None
    source = "<data>" if data is not None else os.fspath(path or DEFAULT_CATALOG_PATH)
    if data is None:
        # a few aliases: the packaged catalog shares one MIG profile block between GPUs
        data = read_yaml(source, "GPU catalog", max_aliases=CATALOG_MAX_ALIASES)
    if not isinstance(data, dict) or not isinstance(data.get("gpus"), list):
        raise ConfigError("GPU catalog must be a mapping with a 'gpus' list", source=source)
    problems: list[str] = []
    raw_cpus = data.get("cpus") or []
    if not isinstance(raw_cpus, list):
        problems.append("'cpus' must be a list of CPU instance types")
        raw_cpus = []
    cpu_entries = [dict(e) if isinstance(e, dict) else e for e in raw_cpus]
    entries = _merge_extra(data["gpus"], extra or [], problems, cpu_entries)
    gpus: list[GPU] = []
    cpus: list[GPU] = []
    seen: dict[str, str] = {}
    for i, raw in enumerate(cpu_entries):
        _claim_names("CPU", raw, seen, problems)
        cpu = _validate_cpu(raw, i, problems)
        if cpu is not None:
            cpus.append(cpu)
    for i, raw in enumerate(entries):
        _claim_names("GPU", raw, seen, problems)
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
    plist = None
    if price_list is not None:
        plist = price_list if isinstance(price_list, PriceList) else load_price_list(price_list)
        # against the packaged catalog a device name the list has but the catalog lacks is a typo;
        # a catalog of one's own may well hold fewer devices than the list prices
        gpus, cpus = _apply_prices(plist, gpus, cpus, strict=packaged)
    return Catalog(gpus=tuple(gpus), efficiency=efficiency, source=source, cpus=tuple(cpus), price_list=plist)


def _apply_prices(plist: PriceList, gpus: list[GPU], cpus: list[GPU],
                  strict: bool = True) -> tuple[list[GPU], list[GPU]]:
    """Devices priced by the list, except where the catalog or the user gave a price."""
    by_key = {_key(k): k for k in plist.prices}
    unknown = []
    known_keys = set()
    for d in gpus + cpus:
        known_keys |= {_key(d.name)} | {_key(a) for a in d.aliases}
    for key, name in by_key.items():
        if key not in known_keys:
            unknown.append(f"prices.{name}: device {name!r} is not in the catalog "
                           f"(known: {', '.join(d.name for d in gpus + cpus)})")
    if unknown and strict:
        raise ConfigError(unknown, source=plist.path)

    def priced(d: GPU) -> GPU:
        rule = {"mig_price_rule": plist.mig_rule}
        if d.priced:  # the catalog entry (a user's device or override) carries its own price
            return replace(d, **rule)
        name = next((by_key[k] for k in [_key(d.name), *(_key(a) for a in d.aliases)] if k in by_key), None)
        if name is None:
            return replace(d, **rule)
        entry = plist.prices[name]
        return replace(d, price_per_hour=entry.price_per_hour, price_source=entry.source or plist.source,
                       price_list=plist.name, **rule)

    return [priced(g) for g in gpus], [priced(c) for c in cpus]


_DEFAULT: dict[str, Catalog] = {}


def default_catalog(price_list: str | None = None) -> Catalog:
    """The packaged catalog under a price list (default :data:`DEFAULT_PRICE_LIST`), loaded once per list."""
    name = price_list or DEFAULT_PRICE_LIST
    if name not in _DEFAULT:
        _DEFAULT[name] = load_catalog(price_list=name)
    return _DEFAULT[name]
