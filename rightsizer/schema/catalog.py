"""The formats of the sizing engine's data files: the GPU catalog
(``rightsizer/data/gpus.yaml``, or the user's catalog) and a price list
(``rightsizer/data/prices/<list>.yaml``). The loaders (``rightsizer.sizing.catalog``,
``rightsizer.sizing.prices``) take their field names from here and check the values, with
messages that name the device; ``python -m rightsizer schema catalog|prices`` prints these
types as JSON Schema for editors."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass
class MigProfileEntry:
    """One MIG profile of a GPU (NVIDIA's MIG user guide)."""

    name: str  # e.g. 1g.10gb
    memory_bytes: int
    compute_fraction: float  # share of the GPU's compute, (0, 1]
    bandwidth_fraction: float  # share of its memory bandwidth, (0, 1]
    max_instances: int


@dataclass
class GpuEntry:
    """A GPU's datasheet numbers in base units (bytes, bytes/s, dense FLOP/s), with sources."""

    name: str
    memory_bytes: int
    memory_bandwidth: float
    fp16_flops: float
    fp32_flops: float
    host_link_bandwidth: float  # bytes/s per direction host <-> GPU (PCIe)
    interconnect_bandwidth: float  # bytes/s per direction GPU <-> GPU
    vendor: str = "nvidia"
    aliases: list[str] = field(default_factory=list)
    form_factor: str = ""
    compute_capability: str | None = None  # "8.0"; NVIDIA GPUs need it
    bf16_flops: float = 0.0
    int8_flops: float = 0.0
    fp8_flops: float = 0.0
    features: dict[str, bool] = field(default_factory=dict)  # overrides the flags derived from the capability
    max_count: int = 8  # GPUs per node
    spec_source: str = ""
    price_source: str = ""
    price_per_hour: float | None = None  # prices live in price lists; a user's override only
    mig_profiles: list[MigProfileEntry] = field(default_factory=list)
    notes: str = ""
    product_label: str = ""  # the nvidia.com/gpu.product node label
    kind: str = "gpu"


@dataclass
class CpuEntry:
    """A CPU instance type: vCPUs, memory and its bandwidth, FLOP/s, with sources."""

    name: str
    vcpus: int
    memory_bytes: int
    memory_bandwidth: float
    fp32_flops: float
    vendor: str = ""
    aliases: list[str] = field(default_factory=list)
    bf16_flops: float = 0.0
    int8_flops: float = 0.0
    spec_source: str = ""
    bandwidth_source: str = ""
    flops_source: str = ""
    price_per_hour: float | None = None
    price_source: str = ""
    notes: str = ""
    kind: str = "cpu"
    features: dict[str, bool] = field(default_factory=dict)


@dataclass
class EfficiencyFactor:
    """One empirical correction factor of the sizing engine, with the measurement it comes from."""

    # a number, a switch, one number per precision, or one set of numbers per serving engine
    value: float | bool | dict[str, float] | dict[str, dict[str, float]]
    source: str


@dataclass
class CatalogFile:
    """The GPU catalog: datasheet numbers per device, the efficiency factors beside them."""

    gpus: list[GpuEntry]
    schema_version: int = 1
    efficiency: dict[str, EfficiencyFactor] = field(default_factory=dict)
    cpus: list[CpuEntry] = field(default_factory=list)


@dataclass
class PriceEntry:
    """A device's price in a list: USD per device-hour, and the instance it comes from."""

    price_per_hour: float
    instance: str = ""
    note: str = ""
    source: str = ""


@dataclass
class PriceListFile:
    """A price list: one source, its date, how a MIG slice is priced, a price per device."""

    name: str
    date: str  # YYYY-MM-DD
    source: str  # a link, or "user"
    prices: dict[str, PriceEntry]
    currency: str = "USD"
    mig_rule: str = "compute_share"
    notes: str = ""


def field_names(cls: type) -> set[str]:
    """The fields a file's section may hold."""
    return {f.name for f in fields(cls)}


def required_names(cls: type) -> tuple[str, ...]:
    """The fields a file's section must give, in the order the type declares them (``name`` aside)."""
    from dataclasses import MISSING

    return tuple(f.name for f in fields(cls) if f.name != "name"
                 and f.default is MISSING and f.default_factory is MISSING)
