"""The report protocol against a real Redis: whole state, deltas, resync, limits.

Every step of the protocol from docs/architecture.md ("Reports: a whole-state sync, then
deltas"): what is written, what the change stream announces, and what is refused.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from registry import keys
from tests.helpers import TOKENS, registry

US = TOKENS["us-east-prod"]
REPORTS = "/v1/reports"


def service(name: str, *addresses: str, ready: bool = True) -> dict[str, Any]:
    return {
        "namespace": "production",
        "name": name,
        "endpoints": [{"address": a, "conditions": {"ready": ready}} for a in addresses],
    }


def whole(seq: int, *services: dict[str, Any]) -> dict[str, Any]:
    return {"seq": seq, "services": list(services)}


def delta(
    seq: int, base: int, *services: dict[str, Any], removed: tuple[str, ...] = ()
) -> dict[str, Any]:
    return {"seq": seq, "base_seq": base, "services": list(services), "removed": list(removed)}


async def post(session: aiohttp.ClientSession, api: str, body: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {US}"}
    async with session.post(api + REPORTS, json=body, headers=headers) as response:
        return response.status, await response.json()


class Redis:
    """What the registry wrote, read straight from Redis."""

    def __init__(self, url: str) -> None:
        self.client: Any = aioredis.Redis.from_url(url, decode_responses=True)

    async def changes(self) -> list[dict[str, str]]:
        return [fields for _id, fields in await self.client.xrange(keys.CHANGES)]

    async def generation(self) -> int:
        return int(await self.client.get(keys.GENERATION) or 0)

    async def records(self) -> dict[str, Any]:
        raw = await self.client.hgetall(keys.services("us-east-prod"))
        return {k: json.loads(v) for k, v in raw.items()}

    async def close(self) -> None:
        await self.client.aclose()


async def test_a_delta_writes_and_announces_only_the_services_it_names(redis_url: str) -> None:
    db = Redis(redis_url)
    async with registry(redis_url) as api, aiohttp.ClientSession() as s:
        a, b = service("a", "10.0.0.1"), service("b", "10.0.0.2")
        status, body = await post(s, api, whole(10, a, b))
        assert (status, body["changed"], body["removed"]) == (200, 2, 0)
        status, body = await post(s, api, delta(11, 10, service("a", "10.0.0.1", ready=False)))
        assert (status, body["changed"], body["removed"]) == (200, 1, 0)
        status, body = await post(s, api, delta(12, 11, removed=("production/b",)))
        assert (status, body["changed"], body["removed"]) == (200, 0, 1)
        records = await db.records()
        changes = await db.changes()
    await db.close()
    assert sorted(records) == ["production/a"]
    assert records["production/a"]["endpoints"][0]["conditions"]["ready"] is False
    assert [(c["kind"], c.get("keys")) for c in changes] == [
        ("services", "production/a,production/b"),
        ("services", "production/a"),
        ("services", "production/b"),
    ]


async def test_an_unchanged_whole_state_announces_nothing(redis_url: str) -> None:
    """An agent re-syncing after a failover that lost nothing causes no churn downstream."""
    db = Redis(redis_url)
    async with registry(redis_url) as api, aiohttp.ClientSession() as s:
        a, b = service("a", "10.0.0.1", "10.0.0.3"), service("b", "10.0.0.2")
        await post(s, api, whole(1, a, b))
        generation, announced = await db.generation(), len(await db.changes())
        reordered = service("a", "10.0.0.3", "10.0.0.1")  # the same content, another order
        status, body = await post(s, api, whole(2, b, reordered))
        assert (status, body["changed"], body["removed"]) == (200, 0, 0)
        assert (await db.generation(), len(await db.changes())) == (generation, announced)
        # One service differs: only it is written and announced.
        status, body = await post(s, api, whole(3, a, service("b", "10.0.0.9")))
        assert (status, body["changed"]) == (200, 1)
        assert (await db.changes())[-1]["keys"] == "production/b"
        assert await db.generation() == generation + 1
        # The seq moved on with the unchanged report: a delta builds on it.
        status, _ = await post(s, api, delta(4, 3, service("c", "10.0.0.4")))
        assert status == 200
    await db.close()


async def test_a_gap_answers_409_resync_and_the_whole_state_heals_it(redis_url: str) -> None:
    db = Redis(redis_url)
    async with registry(redis_url) as api, aiohttp.ClientSession() as s:
        await post(s, api, whole(1, service("a", "10.0.0.1")))
        status, body = await post(s, api, delta(3, 2, service("a", "10.0.0.2")))
        assert status == 409 and body["resync"] is True and body["stored_seq"] == 1
        assert "send the whole state" in body["error"]
        # Redis lost everything: a delta cannot apply, whatever its base.
        await db.client.flushall()
        status, body = await post(s, api, delta(4, 1, service("a", "10.0.0.2")))
        assert status == 409 and body["resync"] is True and body["stored_seq"] is None
        status, _ = await post(s, api, whole(5, service("a", "10.0.0.2")))
        assert status == 200
        status, _ = await post(s, api, delta(6, 5, service("b", "10.0.0.3")))
        assert status == 200
        assert sorted(await db.records()) == ["production/a", "production/b"]
    await db.close()


async def test_stale_reports_are_refused_without_resync(redis_url: str) -> None:
    async with registry(redis_url) as api, aiohttp.ClientSession() as s:
        await post(s, api, whole(10, service("a", "10.0.0.1")))
        status, body = await post(s, api, whole(9, service("a", "10.0.0.2")))
        assert status == 409 and body["stored_seq"] == 10 and "resync" not in body
        status, body = await post(s, api, delta(9, 8, service("a", "10.0.0.2")))
        assert status == 409 and body["stored_seq"] == 10 and "resync" not in body


async def test_malformed_deltas_name_the_field(redis_url: str) -> None:
    async with registry(redis_url) as api, aiohttp.ClientSession() as s:
        cases = [
            (delta(5, 5), "base_seq 5 must be below seq 5"),
            (delta(6, 5, service("a", "10.0.0.1"), removed=("production/a",)), "both"),
            ({**whole(5), "removed": ["production/a"]}, "belongs to a delta"),
            (delta(6, 5, removed=("Production/a",)), "removed.0"),
        ]
        for body, why in cases:
            status, answer = await post(s, api, body)
            assert status == 400, body
            assert why in json.dumps(answer), answer


async def test_many_changes_are_announced_as_the_cluster(redis_url: str) -> None:
    db = Redis(redis_url)
    async with registry(redis_url) as api, aiohttp.ClientSession() as s:
        many = [service(f"s{i}", f"10.0.{i // 250}.{i % 250 + 1}") for i in range(100)]
        status, _ = await post(s, api, whole(1, *many))
        assert status == 200
        (change,) = await db.changes()
    await db.close()
    assert change["kind"] == "cluster" and change["cluster"] == "us-east-prod"


async def test_limits_answer_413_naming_the_limit_and_the_value(redis_url: str) -> None:
    limits = {"max_services_per_cluster": 2, "max_endpoints_per_service": 3}
    async with (
        registry(redis_url, max_report_bytes=4096, **limits) as api,
        aiohttp.ClientSession() as s,
    ):
        a, b, c = (service(n, f"10.0.0.{i}") for i, n in enumerate("abc", 1))
        status, body = await post(s, api, whole(1, a, b, c))
        assert status == 413
        assert (body["limit"], body["value"], body["max"]) == ("services per cluster", 3, 2)
        status, _ = await post(s, api, whole(2, a, b))
        assert status == 200
        status, body = await post(s, api, delta(3, 2, c))
        assert (status, body["limit"], body["value"]) == (413, "services per cluster", 3)
        wide = service("a", *(f"10.0.1.{i}" for i in range(1, 5)))
        status, body = await post(s, api, delta(3, 2, wide))
        assert status == 413 and body["limit"] == "endpoints per service (production/a)"
        assert (body["value"], body["max"]) == (4, 3)
        huge = whole(3, service("a", "10.0.0.1"), {"namespace": "x" * 5000})
        status, body = await post(s, api, huge)
        assert status == 413 and body["limit"] == "report bytes" and body["max"] == 4096
        # Nothing refused changed anything: a delta on seq 2 still applies.
        status, _ = await post(s, api, delta(3, 2, service("b", "10.0.0.7")))
        assert status == 200


async def test_a_whole_state_may_be_large_and_gzipped(redis_url: str) -> None:
    """No 1 MiB ceiling: 2,000 services of 20 endpoints is about 2.5 MB of JSON."""
    db = Redis(redis_url)
    services = [
        service(f"s{i}", *(f"10.{i // 200}.{i % 200}.{j}" for j in range(1, 21)))
        for i in range(2000)
    ]
    raw = json.dumps(whole(1, *services)).encode()
    assert len(raw) > 2 << 20
    headers = {
        "Authorization": f"Bearer {US}",
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    async with (
        registry(redis_url) as api,
        aiohttp.ClientSession() as s,
        s.post(api + REPORTS, data=gzip.compress(raw), headers=headers) as response,
    ):
        assert response.status == 200, await response.text()
        assert (await response.json())["changed"] == 2000
    assert len(await db.records()) == 2000
    await db.close()
