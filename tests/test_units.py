"""Byte counts as the CLI, the sizing messages and the charts write them (rightsizer.units)."""

from rightsizer.units import gib, human_bytes


def test_gib_and_human_bytes():
    assert gib(3 * 2**30) == "3.00 GiB" and gib(1.25 * 2**30, 1) == "1.2 GiB"
    assert human_bytes(2_100_000) == "2.1 MB" and human_bytes(999) == "999 B" and human_bytes(4e9) == "4.0 GB"
    assert human_bytes(279_168, binary=True) == "272.6 KiB" and human_bytes(3 * 2**30, binary=True) == "3.0 GiB"
