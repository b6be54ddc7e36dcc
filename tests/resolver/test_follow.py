"""The resolver's follower against the real registry API and a real Redis: what each kind
of change costs it — which owners' answers it drops, and when it drops none."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from registry import keys
from registry import store as store_mod
from resolver.snapshot import Snapshot
from resolver.sync import Follower
from tests.helpers import TOKENS, registry

US = TOKENS["us-east-prod"]


def service(name: str, *addresses: str, ready: bool = True) -> dict[str, Any]:
    return {
        "namespace": "production",
        "name": name,
        "endpoints": [{"address": a, "conditions": {"ready": ready}} for a in addresses],
    }


class Watched:
    """A follower on its own task, recording every owner whose answers it drops."""

    def __init__(self, redis_url: str, **options: Any) -> None:
        self.client = store_mod.connect(redis_url)
        self.dropped: list[str] = []
        self.published: list[Snapshot] = []
        self.delays: list[float] = []
        self.follower = Follower(
            store_mod.Store(self.client),
            lease_ttl_ms=6000,
            publish=self.published.append,
            invalidate=self._invalidate,
            block_ms=200,
            observe_propagation=self.delays.append,
            **options,
        )

    def _invalidate(self, owners: Iterable[str]) -> None:
        self.dropped.extend(owners)

    def services(self) -> set[str]:
        return set(self.follower.snapshot.services)

    def entry(self, owner: str) -> Any:
        return self.follower.snapshot.services.get(owner)

    async def settled(self) -> None:
        """Until the follower has read the registry twice more (it caught up)."""
        target = self.follower.syncs + 2
        await eventually(lambda: self.follower.syncs >= target)


async def eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def following(redis_url: str, **options: Any) -> AsyncIterator[Watched]:
    watched = Watched(redis_url, **options)
    stop = asyncio.Event()
    task = asyncio.create_task(watched.follower.run(stop))
    try:
        await eventually(lambda: bool(watched.published))
        yield watched
    finally:
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await watched.client.aclose()


async def post(s: aiohttp.ClientSession, url: str, body: Any) -> Any:
    async with s.post(url, json=body, headers={"Authorization": f"Bearer {US}"}) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_each_change_drops_only_the_answers_it_touches(redis_url: str) -> None:
    async with registry(redis_url) as api, aiohttp.ClientSession() as s:
        reports, beats = f"{api}/v1/reports", f"{api}/v1/heartbeats"
        await post(
            s, reports, {"seq": 1, "services": [service("a", "10.0.0.1"), service("b", "10.0.0.2")]}
        )
        async with following(redis_url) as w:
            assert w.services() == {"a.production", "b.production"}
            b_before = w.entry("b.production")

            # A delta: only its service is read again and only its answers dropped.
            w.dropped.clear()
            sent_at = time.time_ns() // 1_000_000
            # A fake wall clock for the propagation figure: the delta is seen applied
            # exactly 1.5 s after it was observed, however long this run really took.
            w.follower.wall_ms = lambda: sent_at + 1500
            delta = {
                "seq": 2,
                "base_seq": 1,
                "services": [service("a", "10.0.0.1", ready=False)],
                "observed_ms": sent_at,
            }
            await post(s, reports, delta)
            await eventually(lambda: not w.entry("a.production").candidates[0].healthy)
            await w.settled()
            assert set(w.dropped) - {""} == {"a.production"}
            assert w.entry("b.production") is b_before
            assert w.delays == [1.5]

            # A heartbeat, an unchanged whole state, a reconcile: nothing is dropped.
            w.dropped.clear()
            await post(s, beats, {"seq": 2})
            await w.settled()
            unchanged = {"seq": 3, "services": [service("b", "10.0.0.2"), delta["services"][0]]}
            assert (await post(s, reports, unchanged))["changed"] == 0
            await w.settled()
            before = w.follower.reconciles
            await w.follower.reconcile()
            assert w.follower.reconciles == before + 1
            assert w.dropped == []
            assert w.entry("b.production") is b_before

            # A removal drops that owner; the namespace's own name depends on it too.
            await post(s, reports, {"seq": 4, "base_seq": 3, "removed": ["production/a"]})
            await eventually(lambda: "a.production" not in w.services())
            assert "a.production" in w.dropped


async def test_a_restarted_empty_redis_refilled_with_the_same_state_changes_nothing(
    redis_url: str,
) -> None:
    body = {"seq": 1, "services": [service("a", "10.0.0.1"), service("b", "10.0.0.2")]}
    raw: Any = aioredis.Redis.from_url(redis_url)
    async with registry(redis_url) as api, aiohttp.ClientSession() as s:
        await post(s, f"{api}/v1/reports", body)
        async with following(redis_url) as w:
            entries = dict(w.follower.snapshot.services)
            await raw.flushall()  # the generation goes backwards: a reconcile, carried over
            await eventually(lambda: w.follower.reconciles >= 2)
            assert w.services() == {"a.production", "b.production"}
            await post(s, f"{api}/v1/reports", {**body, "seq": 2})
            await eventually(lambda: w.follower.generation >= 1)
            await w.settled()
            assert w.follower.snapshot.services == entries
            assert set(w.dropped) <= {""}
    await raw.aclose()


async def test_a_trimmed_stream_is_noticed_and_reconciled(redis_url: str) -> None:
    raw: Any = aioredis.Redis.from_url(redis_url)
    async with registry(redis_url) as api, aiohttp.ClientSession() as s:
        reports = f"{api}/v1/reports"
        await post(s, reports, {"seq": 1, "services": [service("a", "10.0.0.1")]})
        w = Watched(redis_url)
        await w.follower.reconcile()
        # Two changes this resolver has not read yet; the first is trimmed away, as if it
        # had fallen STREAM_MAXLEN entries behind.
        await post(s, reports, {"seq": 2, "base_seq": 1, "services": [service("b", "10.0.0.2")]})
        await post(s, reports, {"seq": 3, "base_seq": 2, "services": [service("c", "10.0.0.3")]})
        await raw.xtrim(keys.CHANGES, maxlen=1, approximate=False)
        stop = asyncio.Event()
        # The follow step notices before applying anything and hands back to reconcile.
        await asyncio.wait_for(w.follower._follow(stop), timeout=30)
        assert "b.production" not in w.services()
        await w.follower.reconcile()
        assert w.services() == {"a.production", "b.production", "c.production"}
        await w.client.aclose()
    await raw.aclose()
