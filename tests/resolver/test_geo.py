"""Locating clients (longest prefix) and ordering regions (great-circle distance)."""

from __future__ import annotations

import pytest

from registry.model import Region
from resolver.geo import Locator, distance_km, region_order

REGIONS = [
    Region(name="us-east-1", latitude=38.13, longitude=-78.45),
    Region(name="eu-west-1", latitude=53.35, longitude=-6.26),
    Region(name="ap-south-1", latitude=19.08, longitude=72.88),
    Region(name="eu-central-1", latitude=50.11, longitude=8.68),
]


@pytest.mark.parametrize(
    ("address", "region", "prefix"),
    [
        ("10.1.2.3", "eu-west-1", 16),
        ("10.1.9.3", "eu-central-1", 24),
        ("10.2.0.1", "us-east-1", 8),
        ("192.0.2.1", "ap-south-1", 0),
        ("2001:db8:1::5", "eu-west-1", 48),
        ("::ffff:10.1.9.1", "eu-central-1", 24),
        ("not-an-ip", "ap-south-1", 0),
    ],
)
def test_longest_prefix_wins(address: str, region: str, prefix: int) -> None:
    locator = Locator(
        [
            ("10.0.0.0/8", "us-east-1"),
            ("10.1.0.0/16", "eu-west-1"),
            ("10.1.9.0/24", "eu-central-1"),
            ("2001:db8:1::/48", "eu-west-1"),
        ],
        default_region="ap-south-1",
    )
    found = locator.locate(address)
    assert (found.region, found.prefix_len) == (region, prefix)


def test_distance_is_great_circle() -> None:
    dublin, frankfurt = REGIONS[1], REGIONS[3]
    assert 1050 < distance_km(dublin, frankfurt) < 1150
    assert distance_km(dublin, dublin) == 0


def test_region_order_nearest_first() -> None:
    assert region_order("eu-west-1", REGIONS) == (
        "eu-west-1",
        "eu-central-1",
        "us-east-1",
        "ap-south-1",
    )
    assert region_order("ap-south-1", REGIONS)[:2] == ("ap-south-1", "eu-central-1")
    assert region_order(None, REGIONS) == tuple(sorted(r.name for r in REGIONS))
