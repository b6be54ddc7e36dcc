"""GeoIP location from a real mmdb file (built here with mmdb-writer), read by maxminddb."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import dns.edns
import dns.message
import dns.query
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from registry.errors import ConfigError
from resolver.geo import Locator
from resolver.geoip import GeoIP
from tests.helpers import TOKENS, eventually, registry, resolver, topology

FRANKFURT = {"location": {"latitude": 50.11, "longitude": 8.68}}
MUMBAI = {"location": {"latitude": 19.08, "longitude": 72.88}}


@pytest.fixture
def database(tmp_path: Path) -> Path:
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City")
    writer.insert_network(IPSet(["192.0.2.0/24"]), FRANKFURT)
    writer.insert_network(IPSet(["198.51.100.0/25"]), MUMBAI)
    writer.insert_network(IPSet(["203.0.113.0/24"]), {"country": {"iso_code": "XX"}})
    path = tmp_path / "city.mmdb"
    writer.to_db_file(str(path))
    return path


def test_clients_go_to_the_region_nearest_their_coordinates(database: Path) -> None:
    geoip = GeoIP(database)
    t = topology()
    locator = Locator(
        [(n.cidr, n.region) for n in t.networks],
        t.default_region,
        geoip=geoip.lookup,
        regions=t.regions,
    )
    frankfurt = locator.locate("192.0.2.77")
    assert (frankfurt.region, frankfurt.prefix_len) == ("eu-west-1", 24)
    assert "GeoIP /24" in frankfurt.source
    assert locator.locate("198.51.100.5").region == "ap-south-1"
    # No coordinates in the record, or no record: the default region.
    assert locator.locate("203.0.113.9").region == "us-east-1"
    assert locator.locate("100.64.0.1").region == "us-east-1"
    # Configured networks still win over the database.
    assert locator.locate("127.0.3.1").region == "ap-south-1"
    assert locator.scope("192.0.2.77", frankfurt) == 24
    geoip.close()


def test_a_bad_database_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "junk.mmdb").write_bytes(b"not a database")
    with pytest.raises(ConfigError, match="GLOBALDNS_GEOIP_DATABASE"):
        GeoIP(tmp_path / "junk.mmdb")


def body(prefix: str) -> dict[str, Any]:
    endpoints = [{"address": f"{prefix}.{i}"} for i in (1, 2)]
    return {
        "seq": 1,
        "services": [{"namespace": "production", "name": "api", "endpoints": endpoints}],
    }


async def test_ecs_from_a_geoip_located_subnet(redis_url: str, database: Path) -> None:
    prefixes = {"us-east-prod": "10.1.0", "eu-west-prod": "10.2.0", "ap-south-prod": "10.3.0"}
    async with (
        registry(redis_url) as api,
        resolver(redis_url, geoip_database=database, ecs_trusted=("127.0.0.0/8",)) as bound,
        aiohttp.ClientSession() as s,
    ):
        for cluster, prefix in prefixes.items():
            headers = {"Authorization": f"Bearer {TOKENS[cluster]}"}
            async with s.post(f"{api}/v1/reports", json=body(prefix), headers=headers) as r:
                assert r.status == 200

        def ask() -> dns.message.Message:
            q = dns.message.make_query(
                "api.production.global.example.com",
                "A",
                options=[dns.edns.ECSOption("192.0.2.0", 24)],
            )
            return dns.query.udp(q, "127.0.0.1", port=bound.dns_port, timeout=10)

        async def europe() -> bool:
            reply = await asyncio.to_thread(ask)
            return {r.to_text() for s in reply.answer for r in s} == {"10.2.0.1", "10.2.0.2"}

        await eventually(europe)
        reply = await asyncio.to_thread(ask)
        [ecs] = [o for o in reply.options if o.otype == dns.edns.ECS]
        assert ecs.scopelen == 24
