"""Byte counts as a reader says them (one home for it: the CLI, the sizing messages, the charts)."""

from __future__ import annotations


def gib(n: float, digits: int = 2) -> str:
    """``n`` bytes in GiB: ``"12.34 GiB"``."""
    return f"{n / 2**30:.{digits}f} GiB"


def human_bytes(n: float, binary: bool = False) -> str:
    """``n`` bytes in the largest unit that keeps it >= 1, one decimal: GB/MB/KB (decimal, as the
    summary chart's GB axis), or GiB/MiB/KiB with ``binary`` (as the fleet chart's GiB axis)."""
    base, units = (1024, ("GiB", "MiB", "KiB")) if binary else (1000, ("GB", "MB", "KB"))
    for power, unit in zip((3, 2, 1), units):
        if n >= base**power:
            return f"{n / base**power:.1f} {unit}"
    return f"{int(n)} B"
