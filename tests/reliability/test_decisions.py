"""Operator decisions outlive the Redis that held them.

Real processes throughout: Redis servers of the test's own, the registry API, the
resolver, and one real agent per cluster. "Fails over to a replica that missed the
write" is made exact with a replica whose replication is cut before the write and a
proxy that moves every client to it (see ``tests/proxy.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from globaldns.redis_server import RedisProcess
from registry import keys
from registry.journal import FILE_NAME
from tests.helpers import eventually, registry, resolver
from tests.proxy import proxy
from tests.reliability.world import CLIENT, WEB, Watcher, admin, compared_again, fleet, goes_to

EU, US, AP = CLIENT["eu-west-prod"], CLIENT["us-east-prod"], CLIENT["ap-south-prod"]


async def held(url: str, key: str, field: str) -> str | None:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        value: str | None = await client.hget(key, field)
        return value
    finally:
        await client.aclose()


async def test_a_drain_and_an_override_survive_redis_restarting_empty(
    own_redis: RedisProcess, tmp_path: Path
) -> None:
    async with resolver(own_redis.url, resync_interval_s=0.3) as bound:
        port = bound.dns_port

        async def decided() -> bool:
            return await goes_to(port, EU, "us-east-prod") and await goes_to(
                port, US, "ap-south-prod", name=WEB
            )

        async with registry(own_redis.url, state_dir=tmp_path) as api, fleet(api):
            await eventually(lambda: goes_to(port, EU, "eu-west-prod"))
            await admin("POST", f"{api}/v1/clusters/eu-west-prod/drain", {"reason": "maintenance"})
            override = {"policy": {"kind": "failover", "order": ["ap-south-prod"]}, "by": "ops"}
            await admin("PUT", f"{api}/v1/services/production/web/policy", override)
            await eventually(decided)
        async with Watcher(port, EU) as eu, Watcher(port, US, WEB) as web:
            # Redis restarts empty while the registry is away (so nothing writes the
            # decisions back yet): the resolver keeps them meanwhile.
            own_redis.kill()
            own_redis.start()
            await compared_again(bound.http_port)
            assert await decided()
            async with registry(own_redis.url, state_dir=tmp_path) as api, fleet(api):
                # The registry writes both back from its journal; the agents re-send
                # their whole state on their next heartbeat.
                await eventually(lambda: held(own_redis.url, keys.DRAINS, "eu-west-prod"))
                await eventually(lambda: held(own_redis.url, keys.POLICIES, "production/web"))
                await eventually(lambda: held(own_redis.url, keys.cluster("eu-west-prod"), "seq"))
                await compared_again(bound.http_port)
        # Not one answer went to the drained cluster, or against the override.
        assert eu.seen and set(eu.seen) == {frozenset({"us-east-prod"})}
        assert web.seen and set(web.seen) == {frozenset({"ap-south-prod"})}
        drain = json.loads(await held(own_redis.url, keys.DRAINS, "eu-west-prod") or "{}")
        assert drain["reason"] == "maintenance"


async def test_an_undrain_is_not_resurrected_by_a_replica_that_missed_it(
    own_redis: RedisProcess, second_redis: RedisProcess, tmp_path: Path
) -> None:
    primary, replica = own_redis, second_redis
    async with (
        proxy(primary.port) as redis_address,
        resolver(redis_address.url, resync_interval_s=0.3) as bound,
    ):
        port = bound.dns_port
        async with registry(redis_address.url, state_dir=tmp_path) as api, fleet(api):
            drain = f"{api}/v1/clusters/eu-west-prod/drain"
            await eventually(lambda: goes_to(port, EU, "eu-west-prod"))
            await admin("POST", drain, {"reason": "maintenance"})
            await eventually(lambda: goes_to(port, EU, "us-east-prod"))
            # The replica copies the drain, then loses contact before the undrain.
            follower = aioredis.Redis.from_url(replica.url)
            try:
                await follower.replicaof("127.0.0.1", primary.port)
                await eventually(lambda: held(replica.url, keys.DRAINS, "eu-west-prod"))
                await follower.replicaof("NO", "ONE")
            finally:
                await follower.aclose()
            await admin("DELETE", drain)
            await eventually(lambda: goes_to(port, EU, "eu-west-prod"))

        async with Watcher(port, EU) as eu:
            # Fail over to the replica while no registry is up to correct it: the
            # resolver reads the stale drain and keeps its newer undrain.
            await redis_address.switch(replica.port)
            await compared_again(bound.http_port)
            assert await goes_to(port, EU, "eu-west-prod")
            async with registry(redis_address.url, state_dir=tmp_path) as api, fleet(api):

                async def undrain_written_back() -> bool:
                    return await held(replica.url, keys.DRAINS, "eu-west-prod") is None

                await eventually(undrain_written_back)
                await compared_again(bound.http_port)
        assert eu.seen and set(eu.seen) == {frozenset({"eu-west-prod"})}


async def test_the_journal_outlives_a_registry_restart(
    own_redis: RedisProcess, tmp_path: Path
) -> None:
    async with registry(own_redis.url, state_dir=tmp_path) as api:
        await admin("POST", f"{api}/v1/clusters/ap-south-prod/drain", {"reason": "r", "by": "o"})
        await admin("POST", f"{api}/v1/clusters/eu-west-prod/drain", {"reason": "r2"})
        await admin("DELETE", f"{api}/v1/clusters/eu-west-prod/drain")
    own_redis.kill()
    own_redis.start()
    async with registry(own_redis.url, state_dir=tmp_path) as api:
        await eventually(lambda: held(own_redis.url, keys.DRAINS, "ap-south-prod"))
        drains = await admin("GET", f"{api}/v1/drains")
        assert [d["cluster"] for d in drains["drains"]] == ["ap-south-prod"]
        assert drains["drains"][0]["by"] == "o"
        # The undrain came back as what it is: a cleared decision, not a drain.
        assert await held(own_redis.url, keys.DECISIONS, "drain:eu-west-prod")


async def test_an_unreadable_journal_is_moved_aside(
    own_redis: RedisProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / FILE_NAME).write_text('{"version": 1, "decisions": [{"subject": 5}]}')
    async with registry(own_redis.url, state_dir=tmp_path) as api:
        await admin("POST", f"{api}/v1/clusters/ap-south-prod/drain", {"reason": "r"})
    assert (tmp_path / (FILE_NAME + ".unreadable")).exists()
    journal = json.loads((tmp_path / FILE_NAME).read_text())
    assert [d["subject"] for d in journal["decisions"]] == ["drain:ap-south-prod"]
    out = capsys.readouterr().out
    assert "decision journal unreadable" in out and "Traceback" not in out
