"""Price lists: one source each (a cloud's on-demand list), with its date and link.

A list is a YAML file ``rightsizer/data/prices/<name>.yaml`` (or any path)::

    name: aws-on-demand-us-east-1
    date: "2026-11-30"
    source: https://aws.amazon.com/ec2/pricing/on-demand/
    currency: USD
    mig_rule: compute_share        # how a MIG slice is priced (MIG_RULES)
    prices:
      H100-SXM: {price_per_hour: 6.88, instance: p5.48xlarge, note: "8x H100, $55.04/h"}

``load_catalog(price_list=...)`` applies one to the device catalog: a device the list does
not price is not offered under it. Every estimate, decision and fleet plan names its list.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from rightsizer.schema.check import is_number
from rightsizer.errors import ConfigError
from rightsizer.schema.catalog import PriceEntry, PriceListFile, field_names
from rightsizer.yamlio import read_yaml

PRICES_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "prices")
DEFAULT_PRICE_LIST = "aws-on-demand-us-east-1"

# How a MIG slice is priced from its GPU's price (the profile's share of the GPU).
MIG_RULES: dict[str, str] = {
    "compute_share": "GPU price x the slice's share of the GPU's 7 compute slices (g/7)",
    "memory_share": "GPU price x the slice's share of the GPU's memory",
}

_KNOWN = field_names(PriceListFile)  # the file format's fields (rightsizer.schema.catalog)
_ENTRY_KNOWN = field_names(PriceEntry)


@dataclass(frozen=True)
class DevicePrice:
    """One device's price in a list: USD per device-hour and the instance it comes from."""

    device: str
    price_per_hour: float
    instance: str = ""
    note: str = ""
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "price_per_hour": self.price_per_hour, "instance": self.instance,
                "note": self.note, "source": self.source}


@dataclass(frozen=True)
class PriceList:
    """A validated price list."""

    name: str
    date: str
    source: str
    path: str
    mig_rule: str = "compute_share"
    currency: str = "USD"
    prices: Mapping[str, DevicePrice] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """What a decision or plan records about the list it used."""
        return {"name": self.name, "date": self.date, "source": self.source, "mig_rule": self.mig_rule,
                "mig_rule_text": MIG_RULES[self.mig_rule], "currency": self.currency}

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "path": self.path,
                "prices": {k: v.to_dict() for k, v in self.prices.items()}}


def available_price_lists(directory: str | os.PathLike | None = None) -> list[str]:
    """Names of the packaged price lists (file names without ``.yaml``), sorted."""
    folder = os.fspath(directory or PRICES_DIR)
    if not os.path.isdir(folder):
        return []
    return sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".yaml"))


def price_list_path(name: str | os.PathLike) -> str:
    """The file of a list: a path as given, else ``<PRICES_DIR>/<name>.yaml``."""
    text = os.fspath(name)
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        return text
    return os.path.join(PRICES_DIR, f"{text}.yaml")


def _number_ok(value: Any) -> bool:
    return is_number(value, finite=True) and value >= 0


def load_price_list(name: str | os.PathLike | None = None) -> PriceList:
    """Load and validate one price list by name (packaged) or path.

    Raises ``ConfigError`` naming the file and every bad field (an unknown list lists the
    known ones; a missing or negative price names the device's ``price_per_hour``).
    """
    path = price_list_path(name or DEFAULT_PRICE_LIST)
    if not os.path.isfile(path):
        raise ConfigError(
            f"unknown price list {os.fspath(name)!r}: no file {path}; known lists: "
            f"{', '.join(available_price_lists()) or 'none'} (in {PRICES_DIR}), or pass a path to your own",
            source="price_list")
    data = read_yaml(path, "price list", max_aliases=0)
    if not isinstance(data, dict):
        raise ConfigError("a price list must be a mapping with name, date, source, mig_rule and prices",
                          source=path)
    problems: list[str] = []
    for key in sorted(set(data) - _KNOWN):
        problems.append(f"unknown field {key!r} (known: {', '.join(sorted(_KNOWN))})")
    for key in ("name", "date", "source"):
        if not data.get(key):
            problems.append(f"field {key!r} is required")
    date = data.get("date")
    if isinstance(date, (_dt.date, _dt.datetime)):
        date = date.isoformat()
    elif date:
        try:
            _dt.date.fromisoformat(str(date))
        except ValueError:
            problems.append(f"field 'date' must be YYYY-MM-DD, got {date!r}")
    source = data.get("source")
    if source and not (str(source).startswith(("http://", "https://")) or str(source) == "user"):
        problems.append(f"field 'source' must be a link (http...) or 'user', got {source!r}")
    rule = data.get("mig_rule", "compute_share")
    if rule not in MIG_RULES:
        problems.append(f"field 'mig_rule' must be one of {', '.join(MIG_RULES)}, got {rule!r}")
    raw_prices = data.get("prices")
    prices: dict[str, DevicePrice] = {}
    if not isinstance(raw_prices, dict) or not raw_prices:
        problems.append("field 'prices' must map device names to {price_per_hour: USD, instance: ...}")
        raw_prices = {}
    for device, entry in raw_prices.items():
        where = f"prices.{device}"
        if isinstance(entry, (int, float)) and not isinstance(entry, bool):
            entry = {"price_per_hour": entry}
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be a mapping with price_per_hour")
            continue
        for key in sorted(set(entry) - _ENTRY_KNOWN):
            problems.append(f"{where}: unknown field {key!r} (known: {', '.join(sorted(_ENTRY_KNOWN))})")
        if "price_per_hour" not in entry:
            problems.append(f"{where}.price_per_hour: missing")
            continue
        value = entry["price_per_hour"]
        if not _number_ok(value):
            problems.append(f"{where}.price_per_hour: must be a number >= 0 (USD per hour), got {value!r}")
            continue
        prices[str(device)] = DevicePrice(str(device), float(value), str(entry.get("instance", "")),
                                          str(entry.get("note", "")), str(entry.get("source", "") or source))
    if problems:
        raise ConfigError(problems, source=path)
    return PriceList(name=str(data["name"]), date=str(date), source=str(source), path=path, mig_rule=rule,
                     currency=str(data.get("currency", "USD")), prices=prices)


__all__ = ["PriceList", "DevicePrice", "load_price_list", "available_price_lists", "DEFAULT_PRICE_LIST",
           "MIG_RULES", "PRICES_DIR", "price_list_path"]
