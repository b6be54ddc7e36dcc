"""What the registry refuses to admit, against the real API and a real Redis.

Every refusal is a 400 whose JSON names the field and says why, and leaves nothing in
Redis: the report is refused whole, so what the cluster had before stays as it was.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from registry import keys
from tests.helpers import ADMIN, TOKENS, registry

US = TOKENS["us-east-prod"]
GOOD = "10.0.0.1"


def report(*addresses: str, seq: int = 1, **fields: Any) -> dict[str, Any]:
    return {
        "seq": seq,
        "services": [
            {
                "namespace": "production",
                "name": "api",
                "ports": [{"name": "http", "port": 8080}],
                "endpoints": [{"address": a, "conditions": {"ready": True}} for a in addresses],
                **fields,
            }
        ],
    }


async def post(
    s: aiohttp.ClientSession, url: str, body: Any, token: str = US
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    async with s.post(url, json=body, headers=headers) as response:
        assert response.content_type == "application/json"
        return response.status, await response.json()


async def stored(redis_url: str) -> dict[Any, Any]:
    """Every service record held for us-east-prod, read straight from Redis."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        return await client.hgetall(keys.services("us-east-prod"))
    finally:
        await client.aclose()


REFUSED = [
    ("2001:db8::66%x", "zone index"),
    ("fe80::1%eth0", "zone index"),
    ("::ffff:169.254.169.254", "IPv4-mapped"),
    ("::ffff:10.0.0.2", "IPv4-mapped"),
    ("::10.0.0.2", "IPv4-compatible"),
    ("2002:a9fe:a9fe::1", "embeds 169.254.169.254"),
    ("169.254.169.254", "link-local"),
    ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("255.255.255.255", "limited broadcast"),
    ("240.0.0.1", "reserved"),
    ("127.0.0.1", "loopback"),
    ("127.10.1.1", "loopback"),
    ("::1", "loopback"),
]


async def test_addresses_a_production_registry_refuses(redis_url: str) -> None:
    async with (
        registry(redis_url, allow_loopback_endpoints=False) as api,
        aiohttp.ClientSession() as s,
    ):
        status, _ = await post(s, f"{api}/v1/reports", report(GOOD))
        assert status == 200
        before = await stored(redis_url)
        for seq, (address, why) in enumerate(REFUSED, start=2):
            status, body = await post(s, f"{api}/v1/reports", report(GOOD, address, seq=seq))
            assert status == 400, address
            [problem] = body["problems"]
            assert problem["field"] == "services.0.endpoints.1.address", address
            assert why in problem["why"], (address, problem["why"])
            assert await stored(redis_url) == before, address
        async with s.get(f"{api}/v1/services/production/api") as response:
            shown = await response.json()
        assert [e["address"] for e in shown["endpoints"]] == [GOOD]


async def test_loopback_endpoints_need_the_setting(redis_url: str) -> None:
    async with (
        registry(redis_url, allow_loopback_endpoints=False) as strict,
        aiohttp.ClientSession() as s,
    ):
        status, body = await post(s, f"{strict}/v1/reports", report("127.10.1.1"))
        assert status == 400
        assert "GLOBALDNS_ALLOW_LOOPBACK_ENDPOINTS" in body["problems"][0]["why"]
    assert await stored(redis_url) == {}
    # dev mode and the test suite set it; every other refusal still holds there
    async with registry(redis_url) as dev, aiohttp.ClientSession() as s:
        assert (await post(s, f"{dev}/v1/reports", report("127.10.1.1", "::1")))[0] == 200
        status, body = await post(s, f"{dev}/v1/reports", report("fe80::1%lo", seq=2))
        assert status == 400 and "zone index" in body["problems"][0]["why"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"ports": [{"name": "http", "port": "8080"}]}, "services.0.ports.0.port"),
        ({"ports": [{"name": "http", "port": 8080.0}]}, "services.0.ports.0.port"),
        ({"ttl": 5.0}, "services.0.ttl"),
        ({"ttl": "5"}, "services.0.ttl"),
        (
            {"endpoints": [{"address": GOOD, "conditions": {"ready": "true"}}]},
            "services.0.endpoints.0.conditions.ready",
        ),
        (
            {"endpoints": [{"address": GOOD, "conditions": {"serving": 1}}]},
            "services.0.endpoints.0.conditions.serving",
        ),
        ({"endpoints": [{"address": 167772161}]}, "services.0.endpoints.0.address"),
        (
            {"policy": {"kind": "weighted", "weights": {"us-east-prod": "5"}}},
            "services.0.policy.weights.us-east-prod",
        ),
        ({"ports": [{"port": p} for p in range(1, 102)]}, "services.0.ports"),
        (
            {"endpoints": [{"address": GOOD, "ports": [{"port": p} for p in range(1, 102)]}]},
            "services.0.endpoints.0.ports",
        ),
    ],
)
async def test_reports_are_parsed_strictly(
    redis_url: str, change: dict[str, Any], field: str
) -> None:
    async with registry(redis_url) as api, aiohttp.ClientSession() as s:
        status, body = await post(s, f"{api}/v1/reports", report(GOOD, **change))
        assert status == 400
        assert [p["field"] for p in body["problems"]] == [field]
        status, body = await post(s, f"{api}/v1/reports", {**report(GOOD), "seq": 1.0})
        assert status == 400 and [p["field"] for p in body["problems"]] == ["seq"]
    assert await stored(redis_url) == {}


async def test_heartbeats_and_drains_are_parsed_strictly(redis_url: str) -> None:
    async with registry(redis_url) as api, aiohttp.ClientSession() as s:
        assert (await post(s, f"{api}/v1/reports", report(GOOD, seq=5)))[0] == 200
        status, body = await post(s, f"{api}/v1/heartbeats", {"seq": "5"})
        assert status == 400 and body["problems"][0]["field"] == "seq"
        assert (await post(s, f"{api}/v1/heartbeats", {"seq": 5}))[0] == 200
        drain = f"{api}/v1/clusters/us-east-prod/drain"
        # "yes" is not true: a drain that would strand a service is not forced by it
        status, body = await post(s, drain, {"force": "yes"}, ADMIN)
        assert status == 400 and body["problems"][0]["field"] == "force"
        async with s.get(f"{api}/v1/drains") as response:
            assert (await response.json())["drains"] == []
