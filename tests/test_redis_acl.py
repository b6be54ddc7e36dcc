"""The shipped deploy/redis/ configuration, with the real registry and resolver.

A primary and a replica run ``redis.conf`` and ``users.acl`` as shipped (passwords
replaced). The registry logs in as ``globaldns-registry`` and the resolver as
``globaldns-resolver`` (on the replica, as README's "Running the parts" suggests): every
kind of API call and the resolver's load and follow paths work, nothing of theirs is
denied (ACL LOG), what the allowlists leave out is refused, and a primary left without a
replica refuses reports (NOREPLICAS → 503, which the agent retries).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import redis

from globaldns.redis_server import RedisProcess
from tests.helpers import ADMIN, TOKENS, eventually, registry, resolver
from tests.registry.test_api import call, report
from tests.sentinel import DnsProbe, SentinelTopology, wait_for

US = TOKENS["us-east-prod"]


class Pair:
    def __init__(self, binary: str) -> None:
        self.shipped = SentinelTopology(binary)
        self.primary = self.shipped.shipped_server(None)
        self.primary.start()
        self.replica = self.shipped.shipped_server(self.primary.port)
        self.replica.start()
        self.wait_replicated()

    def wait_replicated(self) -> None:
        wait_for(lambda: self.shipped.online_replicas(self.primary.port), "replica online")

    def url(self, user: str, server: RedisProcess) -> str:
        password = self.shipped.passwords[user]
        return f"redis://globaldns-{user}:{password}@127.0.0.1:{server.port}/0"

    def client(self, user: str, server: RedisProcess) -> redis.Redis:
        return redis.Redis.from_url(self.url(user, server), decode_responses=True)

    def stop(self) -> None:
        self.replica.stop()
        self.primary.stop()


@pytest.fixture(scope="module")
def pair(redis_binary: str) -> Iterator[Pair]:
    started = Pair(redis_binary)
    try:
        yield started
    finally:
        started.stop()


async def test_registry_and_resolver_work_under_the_shipped_acls(pair: Pair) -> None:
    async with (
        registry(pair.url("registry", pair.primary)) as api,
        resolver(pair.url("resolver", pair.replica), rrl_rate=0) as bound,
        aiohttp.ClientSession() as s,
    ):
        base = f"{api}/v1"
        assert (await call(s, "POST", f"{base}/reports", US, report(1, "10.0.0.1")))[0] == 200
        delta: dict[str, Any] = {**report(2, "10.0.0.2"), "base_seq": 1}
        assert (await call(s, "POST", f"{base}/reports", US, delta))[0] == 200
        assert (await call(s, "POST", f"{base}/heartbeats", US, {"seq": 2}))[0] == 200
        for path in ("/clusters", "/services", "/services/production/api", "/drains"):
            assert (await call(s, "GET", base + path))[0] == 200, path
        drain = f"{base}/clusters/eu-west-prod/drain"
        assert (await call(s, "POST", drain, ADMIN, {"reason": "acl"}))[0] == 200
        assert (await call(s, "DELETE", drain, ADMIN))[0] == 200
        policy = f"{base}/services/production/api/policy"
        assert (await call(s, "PUT", policy, ADMIN, {"policy": {"kind": "all"}}))[0] == 200
        assert (await call(s, "DELETE", policy, ADMIN))[0] == 200
        assert (await call(s, "GET", f"{api}/readyz"))[0] == 200
        # The resolver loaded and followed all of it through the replica.
        await eventually(DnsProbe(bound.dns_port, "api.production.global.example.com").answers)

    with pair.client("resolver", pair.replica) as reader:
        assert reader.get("gdns:gen") is not None
    with pair.shipped.admin(pair.primary.port) as admin:
        denied = [e for e in admin.acl_log() if e.get("username", "").startswith("globaldns-")]
    # redis-py sends CLIENT SETINFO on connect and ignores a refusal; it is left out of
    # the allowlists on purpose (Redis 7.0 has no such command and would reject the file).
    assert [e for e in denied if e.get("object") != "client|setinfo"] == []


@pytest.mark.parametrize(
    ("user", "command"),
    [
        ("resolver", ("SET", "gdns:gen", "0")),
        ("resolver", ("XADD", "gdns:chg", "*", "a", "b")),
        ("resolver", ("EVALSHA", "0" * 40, "0")),
        ("registry", ("FLUSHALL",)),
        ("registry", ("SWAPDB", "0", "1")),
        ("registry", ("KEYS", "*")),
        ("registry", ("SCAN", "0")),
        ("registry", ("CONFIG", "GET", "*")),
        ("registry", ("FUNCTION", "FLUSH")),
        ("registry", ("EVAL", "return 1", "0")),
        ("registry", ("SET", "other:key", "1")),
        ("registry", ("RANDOMKEY",)),
    ],
)
def test_what_the_allowlists_leave_out_is_refused(
    pair: Pair, user: str, command: tuple[str, ...]
) -> None:
    with pair.client(user, pair.primary) as client, pytest.raises(redis.ResponseError) as caught:
        client.execute_command(*command)
    assert "permission" in str(caught.value).lower() or "NOPERM" in str(caught.value)


async def test_a_primary_without_a_replica_refuses_reports_with_503(pair: Pair) -> None:
    """min-replicas-to-write: what an isolated or restarted-empty primary does."""
    async with registry(pair.url("registry", pair.primary)) as api, aiohttp.ClientSession() as s:
        assert (await call(s, "POST", f"{api}/v1/reports", US, report(10)))[0] == 200
        pair.replica.kill()
        try:

            async def refused() -> Any:
                status, body = await call(s, "POST", f"{api}/v1/reports", US, report(11))
                assert status in (200, 503), body
                return status == 503 and body

            body = await eventually(refused)
            assert "NOREPLICAS" in body["detail"]
        finally:
            pair.replica.start()
            await asyncio.to_thread(pair.wait_replicated)
        await eventually(
            lambda: call(s, "POST", f"{api}/v1/reports", US, report(12)),
        )
        status, _ = await call(s, "POST", f"{api}/v1/reports", US, report(13))
        assert status == 200
