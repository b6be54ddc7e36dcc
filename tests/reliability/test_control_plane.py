"""A control-plane outage is not a world outage; a resolver that knows nothing says so.

Real processes: a Redis of the test's own, the registry API, the resolver and one real
agent per cluster, with a 3 s lease. Waiting out "longer than the lease" is a sleep that
lets time pass; what is asserted is every answer a client got meanwhile.
"""

from __future__ import annotations

import asyncio

import dns.edns
import dns.rcode
import redis.asyncio as aioredis

from globaldns.redis_server import RedisProcess
from registry import keys
from tests.helpers import aquery, eventually, ready, registry, resolver
from tests.reliability.world import (
    CLIENT,
    NAME,
    PREFIX,
    Watcher,
    compared_again,
    fleet,
    goes_to,
    status,
)

TTL_S = 3.0
EU = CLIENT["eu-west-prod"]
ALL = sorted(PREFIX)


async def live(http_port: int) -> list[str]:
    return sorted((await status(http_port))["live_clusters"])


async def outages(http_port: int) -> list[str]:
    return [o["cause"] for o in (await status(http_port))["control_plane_outages"]]


async def reported(url: str, *clusters: str) -> bool:
    client = aioredis.Redis.from_url(url)
    try:
        return all([await client.hexists(keys.cluster(c), "seq") for c in clusters])
    finally:
        await client.aclose()


async def live_are(http_port: int, *clusters: str) -> bool:
    return await live(http_port) == sorted(clusters)


async def outages_are(http_port: int, *causes: str) -> bool:
    return await outages(http_port) == list(causes)


def only(seen: list[frozenset[str] | str], *expected: frozenset[str]) -> bool:
    """Every answer was one of ``expected``, in that order (each may not occur)."""
    order = {e: i for i, e in enumerate(expected)}
    ranks = [order.get(s, -1) for s in seen]
    return bool(seen) and -1 not in ranks and ranks == sorted(ranks)


async def test_a_registry_outage_longer_than_the_lease_expires_no_lease(redis_url: str) -> None:
    async with resolver(redis_url, lease_ttl_s=TTL_S) as bound:
        port, http = bound.dns_port, bound.http_port
        async with registry(redis_url, lease_ttl_s=TTL_S) as api, fleet(api):
            await eventually(lambda: goes_to(port, EU, "eu-west-prod"))
            await eventually(lambda: live_are(http, *ALL))
        async with Watcher(port, EU) as eu:
            # The registry is gone: nobody takes heartbeats. The resolver sees its
            # beacon go quiet and holds every lease.
            await eventually(lambda: outages_are(http, "registry silent"))
            await asyncio.sleep(2 * TTL_S)  # longer than any lease
            assert await live(http) == ALL
            async with registry(redis_url, lease_ttl_s=TTL_S) as api, fleet(api) as agents:
                await eventually(lambda: outages_are(http))
                # One cluster dying while the others report still leaves the answers.
                await agents.stop("eu-west-prod")
                await eventually(lambda: goes_to(port, EU, "us-east-prod"))
                assert await outages(http) == []
        assert only(eu.seen, frozenset({"eu-west-prod"}), frozenset({"us-east-prod"}))


async def test_redis_down_longer_than_the_lease_expires_no_lease(
    own_redis: RedisProcess,
) -> None:
    async with (
        resolver(own_redis.url, lease_ttl_s=TTL_S, resync_interval_s=0.3) as bound,
        registry(own_redis.url, lease_ttl_s=TTL_S) as api,
        fleet(api) as agents,
    ):
        port, http = bound.dns_port, bound.http_port
        await eventually(lambda: live_are(http, *ALL))
        async with Watcher(port, EU) as eu:
            own_redis.kill()
            await asyncio.sleep(2 * TTL_S)
            # Redis comes back empty, and the resolver reads it before any agent has
            # re-sent its state (theirs may be backing off for seconds).
            for cluster in ALL:
                await agents.stop(cluster)
            own_redis.start()
            await compared_again(http)
            assert await live(http) == ALL
            for cluster in ALL:
                agents.start(cluster)
            await eventually(lambda: reported(own_redis.url, *ALL))
            await compared_again(http)
            assert await live(http) == ALL
        assert only(eu.seen, frozenset({"eu-west-prod"}))


async def test_most_clusters_going_stale_at_once_is_the_control_planes_fault(
    redis_url: str,
) -> None:
    async with (
        resolver(redis_url, lease_ttl_s=TTL_S) as bound,
        registry(redis_url, lease_ttl_s=TTL_S) as api,
        fleet(api) as agents,
    ):
        port, http = bound.dns_port, bound.http_port
        await eventually(lambda: live_are(http, *ALL))
        async with Watcher(port, EU) as eu:
            # Two of three clusters fall silent together (a partition between them and
            # the registry): the last picture is kept, and said to be kept.
            await agents.stop("eu-west-prod")
            await agents.stop("ap-south-prod")
            await eventually(lambda: outages_are(http, "most clusters stale at once"))
            await asyncio.sleep(2 * TTL_S)
            assert await live(http) == ALL
            agents.start("eu-west-prod")
            await eventually(lambda: outages_are(http))
            # ap-south got one lease to come back, and did not.
            await eventually(lambda: live_are(http, "eu-west-prod", "us-east-prod"))
        assert only(eu.seen, frozenset({"eu-west-prod"}))


async def test_a_resolver_started_while_redis_is_down_answers_servfail(
    own_redis: RedisProcess,
) -> None:
    own_redis.kill()
    async with resolver(own_redis.url, wait_for_sync=False) as bound:
        reply = await aquery(bound.dns_port, NAME)
        assert reply.rcode() == dns.rcode.SERVFAIL
        assert [o.code for o in reply.options if o.otype == dns.edns.EDE] == [
            dns.edns.EDECode.NOT_READY
        ]
        assert not await ready(bound.http_port)
        own_redis.start()
        async with registry(own_redis.url) as api, fleet(api):
            await eventually(lambda: ready(bound.http_port))
            await eventually(lambda: goes_to(bound.dns_port, EU, "eu-west-prod"))
