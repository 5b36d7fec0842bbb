"""--disk-free-limit and the blocked reason, as RabbitMQ spells them."""
from __future__ import annotations

import pytest

from minimq.server.alarms import (
    disk_limit_bytes,
    parse_disk_free_limit,
    parse_information_unit,
    reason_text,
    resource_of,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("50000000", 50_000_000),
        ("0", 0),
        ("1GB", 10**9),
        ("500MB", 500 * 10**6),
        ("64kB", 64_000),
        ("2GiB", 2 * 2**30),
        ("512k", 512 * 1024),
        ("3M", 3 * 2**20),
        ("1G", 2**30),
        ("10mb", 10**7),
        (" 7 MB ", 7 * 10**6),
    ],
)
def test_amounts_in_rabbitmq_information_units(text, expected):
    assert parse_information_unit(text) == expected
    assert parse_disk_free_limit(text) == expected


@pytest.mark.parametrize("text", ["", "MB", "1TBX", "-5", "1.5GB", "12 parsecs", "0x10"])
def test_bad_amounts_are_refused(text):
    with pytest.raises(ValueError):
        parse_disk_free_limit(text)


def test_a_fraction_is_relative_to_the_disk_size():
    limit = parse_disk_free_limit("0.05")
    assert limit == 0.05 and isinstance(limit, float)
    assert disk_limit_bytes(limit, 200 * 10**9) == 10 * 10**9
    assert disk_limit_bytes(50_000_000, 200 * 10**9) == 50_000_000
    for bad in ("1.0", "1.5", "-0.1", "0.x"):
        with pytest.raises(ValueError):
            parse_disk_free_limit(bad)


def test_reason_names_every_resource_as_rabbitmq_does():
    assert reason_text({"memory"}) == "low on memory"
    assert reason_text({"disk"}) == "low on disk"
    assert reason_text({"memory", "disk"}) == "low on disk & memory"
    assert resource_of("low on disk") == "disk"
    assert resource_of("maintenance") == "maintenance"
