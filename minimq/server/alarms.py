"""Resource alarms: the limits below which the broker stops reading from publishers.

RabbitMQ has two: memory (vm_memory_high_watermark) and free disk space (disk_free_limit).
Either blocks every publishing connection; both can be on at once, and a connection stays
blocked until none is. This module holds what is pure about them: parsing the limits an
operator writes, and the reason text a client sees in connection.blocked.
"""
from __future__ import annotations

import re
from typing import Iterable

# RabbitMQ's information units (rabbit_resource_monitor_misc): k/K/KiB... are powers of
# 1024, kB/KB/MB/GB powers of 1000.
_UNITS = {
    "": 1,
    "k": 1024, "K": 1024, "kiB": 1024, "KiB": 1024, "KIB": 1024, "kib": 1024,
    "m": 1024**2, "M": 1024**2, "MiB": 1024**2, "MIB": 1024**2, "mib": 1024**2,
    "g": 1024**3, "G": 1024**3, "GiB": 1024**3, "GIB": 1024**3, "gib": 1024**3,
    "kB": 1000, "KB": 1000, "kb": 1000, "Kb": 1000,
    "MB": 1000**2, "mB": 1000**2, "mb": 1000**2, "Mb": 1000**2,
    "GB": 1000**3, "gB": 1000**3, "gb": 1000**3, "Gb": 1000**3,
}
_AMOUNT = re.compile(r"^\s*([0-9]+)\s*([A-Za-z]*)\s*$")

DEFAULT_DISK_FREE_LIMIT = 50_000_000  # RabbitMQ's default: 50MB


def parse_information_unit(text: str) -> int:
    """'50000000', '1GB', '500MB', '2GiB', '512k' -> bytes (ValueError otherwise)."""
    m = _AMOUNT.match(text)
    if not m or m.group(2) not in _UNITS:
        raise ValueError(
            f"not an amount of bytes: {text!r} (use bytes, or a unit: kB MB GB = 1000s, KiB MiB GiB = 1024s)"
        )
    return int(m.group(1)) * _UNITS[m.group(2)]


def parse_disk_free_limit(text: str) -> int | float:
    """--disk-free-limit: bytes (an int, units allowed) or a fraction of the disk (a float < 1).

    '0.05' means 5% of the data directory's filesystem; '0' turns the disk alarm off.
    """
    text = text.strip()
    if "." in text:
        try:
            fraction = float(text)
        except ValueError:
            raise ValueError(f"not a fraction: {text!r}") from None
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"a fraction of the disk must be between 0 and 1, got {text!r}")
        return fraction
    return parse_information_unit(text)


def disk_limit_bytes(limit: int | float, total: int) -> int:
    """The limit in bytes for a filesystem of `total` bytes."""
    if isinstance(limit, float):
        return int(total * limit)
    return limit


def reason_text(resources: Iterable[str]) -> str:
    """connection.blocked's reason, as RabbitMQ words it: 'low on memory', 'low on disk',
    and 'low on disk & memory' when both are on as the connection gets blocked."""
    return "low on " + " & ".join(sorted(resources))


def resource_of(reason: str) -> str:
    """The resource a reason text names ('low on memory' -> 'memory')."""
    return reason[len("low on "):] if reason.startswith("low on ") else reason


def format_bytes(n: int) -> str:
    for unit, size in (("GB", 1000**3), ("MB", 1000**2), ("kB", 1000)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n}B"
