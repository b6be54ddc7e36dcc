"""When the sync fails: it is started again, and readiness says when the snapshot is old.

Real Redis, registry and resolver on loopback. A bug is injected into the follower (the
data-driven failures are in ``tests/reliability/test_bad_records.py``, and none of them
raises any more); Redis is killed for the stale snapshot.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import dns.rcode
import structlog
from prometheus_client.parser import text_string_to_metric_families

from globaldns.redis_server import RedisProcess
from registry.store import Change
from resolver.main import stale
from resolver.settings import ResolverSettings
from resolver.sync import Follower
from tests.helpers import TOKENS, addresses, aquery, eventually, ready, registry, resolver

NAME = "api.production.global.example.com"
US = "127.0.1.1"
LONG_LEASE: dict[str, Any] = {"lease_ttl_s": 3600}


async def report(api: str, seq: int, *addresses: str) -> None:
    body = {
        "seq": seq,
        "services": [
            {
                "namespace": "production",
                "name": "api",
                "endpoints": [{"address": a} for a in addresses],
            }
        ],
    }
    headers = {"Authorization": f"Bearer {TOKENS['us-east-prod']}"}
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{api}/v1/reports", json=body, headers=headers) as r,
    ):
        assert r.status == 200, await r.text()


async def answered(port: int) -> list[str]:
    return addresses(await aquery(port, NAME, source=US))


async def counter(port: int, name: str) -> float:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{port}/metrics") as r,
    ):
        text = await r.text()
    for family in text_string_to_metric_families(text):
        if family.name == name:
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    raise AssertionError(f"{name} is not exported")


async def test_a_sync_that_raises_is_started_again_and_said_in_one_line(
    redis_url: str, monkeypatch: Any
) -> None:
    apply = Follower._apply
    raised: list[Change] = []

    async def buggy(self: Follower, change: Change) -> None:
        if not raised:
            raised.append(change)
            raise RuntimeError("a bug nobody foresaw")
        await apply(self, change)

    monkeypatch.setattr(Follower, "_apply", buggy)
    with structlog.testing.capture_logs() as logs:
        async with (
            registry(redis_url, **LONG_LEASE) as api,
            resolver(redis_url, **LONG_LEASE) as bound,
        ):
            await report(api, 1, "10.1.0.1")
            # The first change raised; the sync was started again and read it all the same.
            await eventually(lambda: _has(answered(bound.dns_port), "10.1.0.1"))
            assert raised
            assert await counter(bound.http_port, "globaldns_resolver_sync_restarts") == 1
            await report(api, 2, "10.1.0.2")
            await eventually(lambda: _has(answered(bound.dns_port), "10.1.0.2"))
            assert await ready(bound.http_port)
    failed = [e for e in logs if e["event"].startswith("resolver sync failed")]
    assert len(failed) == 1
    (line,) = failed
    assert line["log_level"] == "error" and "exc_info" not in line
    assert line["error"] == "RuntimeError: a bug nobody foresaw"
    assert line["at"].endswith("in buggy")


async def _has(answer: Any, address: str) -> bool:
    return address in await answer


async def test_with_redis_out_an_old_snapshot_stays_ready_and_answers(
    own_redis: RedisProcess,
) -> None:
    """Every resolver shares a Redis outage: none leaves its Service for it."""
    async with resolver(own_redis.url, max_snapshot_age_s=3, **LONG_LEASE) as bound:
        async with registry(own_redis.url, **LONG_LEASE) as api:
            await report(api, 1, "10.1.0.1", "10.1.0.2")
            await eventually(lambda: ready(bound.http_port))
        own_redis.kill()

        async def serving_old() -> dict[str, Any] | None:
            body = await readiness(bound.http_port)
            old = body.get("snapshot_age_s") or 0
            return body if old > 3 else None

        body = await eventually(serving_old)
        assert body["status"] == "ready"
        assert body["serving"] == "the last snapshot: Redis is unreachable"
        reply = await aquery(bound.dns_port, NAME, source=US)
        assert reply.rcode() == dns.rcode.NOERROR
        assert sorted(addresses(reply)) == ["10.1.0.1", "10.1.0.2"]
        own_redis.start()
        await eventually(lambda: ready(bound.http_port))


async def test_a_broken_sync_with_redis_up_is_not_ready_but_still_answers(
    redis_url: str, monkeypatch: Any
) -> None:
    """This resolver's own sync fails while Redis answers: the others can serve."""
    async with (
        registry(redis_url, **LONG_LEASE) as api,
        resolver(redis_url, max_snapshot_age_s=3, **LONG_LEASE) as bound,
    ):
        await report(api, 1, "10.1.0.1", "10.1.0.2")
        await eventually(lambda: _has(answered(bound.dns_port), "10.1.0.2"))

        async def broken(self: Follower, *change: Change) -> None:
            raise RuntimeError("a sync that cannot settle")

        monkeypatch.setattr(Follower, "_apply", broken)  # the next change raises,
        monkeypatch.setattr(Follower, "_reconcile", broken)  # and so does every restart
        await report(api, 2, "10.1.0.3")

        async def not_ready() -> dict[str, Any] | None:
            body = await readiness(bound.http_port)
            return body if body["status"] == "stale" else None

        body = await eventually(not_ready)
        assert body["snapshot_age_s"] > body["max_snapshot_age_s"] == 3
        assert "DNS still answers from it" in body["reason"]
        reply = await aquery(bound.dns_port, NAME, source=US)
        assert reply.rcode() == dns.rcode.NOERROR


async def readiness(port: int) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{port}/readyz") as r,
    ):
        body: dict[str, Any] = await r.json()
        assert (r.status == 503) == (body["status"] != "ready"), body
        return body


def test_staleness_is_judged_against_the_bound() -> None:
    assert stale(None, 60, None) is None  # never synced: the first-load rule applies
    assert stale(59.0, 60, "registry unreachable: x") is None
    assert stale(61.0, None, None) is None  # no bound
    reason = stale(61.0, 60, None)
    assert reason is not None and "61.0s old" in reason and "60s bound" in reason
    assert "registry unreachable: x" in (stale(61.0, 60, "registry unreachable: x") or "")
    assert stale(61.0, 60, "registry unreachable: x", redis_out=True) is None


def test_the_default_bound_follows_the_resync_interval() -> None:
    assert ResolverSettings().snapshot_age_bound_s == 60
    assert ResolverSettings(resync_interval_s=5).snapshot_age_bound_s == 30
    assert ResolverSettings(resync_interval_s=120).snapshot_age_bound_s == 240
    assert ResolverSettings(max_snapshot_age_s=10).snapshot_age_bound_s == 10
    assert ResolverSettings(max_snapshot_age_s=0).snapshot_age_bound_s is None
