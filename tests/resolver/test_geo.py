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


def test_a_latency_matrix_overrides_distance() -> None:
    latency = {"eu-west-1": {"ap-south-1": 40.0, "us-east-1": 90.0}}
    assert region_order("eu-west-1", REGIONS, latency) == (
        "eu-west-1",
        "ap-south-1",
        "us-east-1",
        "eu-central-1",
    )
    assert region_order("us-east-1", REGIONS, latency)[:2] == ("us-east-1", "eu-west-1")


def test_catalogue_regions_need_no_coordinates() -> None:
    from registry import topology

    t = topology.parse(
        {
            "regions": {
                "eu-central-1": {},
                "us-east-1": {},
                "mars-1": {"latitude": 1, "longitude": 1},
            },
            "clusters": {"fra": {"region": "eu-central-1"}},
            "networks": {"10.9.0.0/16": "fra"},
        }
    )
    by_name = {r.name: r for r in t.regions}
    assert by_name["eu-central-1"].jurisdiction == "eu"
    assert by_name["us-east-1"].latitude == pytest.approx(38.13)
    assert by_name["mars-1"].jurisdiction is None
    # A network may name a cluster: its clients are in that cluster's region, and cluster.
    [network] = t.networks
    assert (network.region, network.cluster) == ("eu-central-1", "fra")
    locator = Locator([(network.cidr, network.region, network.cluster)], None)
    found = locator.locate("10.9.1.1")
    assert (found.region, found.cluster) == ("eu-central-1", "fra")
