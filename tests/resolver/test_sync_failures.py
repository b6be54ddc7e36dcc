"""When the sync fails: it is started again.

Real Redis, registry and resolver on loopback. A bug is injected into the follower (the
data-driven failures are in ``tests/reliability/test_bad_records.py``, and none of them
raises any more).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import structlog
from prometheus_client.parser import text_string_to_metric_families

from registry.store import Change
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
