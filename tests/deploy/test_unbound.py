"""globaldns behind a real forwarding resolver, as CoreDNS puts it in a cluster: a client
asks Unbound, Unbound forwards the global zone to the resolver (with the client's subnet,
which the resolver trusts from Unbound only), and the answers, TTLs, negative answers,
SRV and a failover come through it as they would through CoreDNS."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from tests.deploy import unbound
from tests.helpers import TOKENS, addresses, eventually, registry, resolver

NAME = "api.production.global.example.com"
PREFIX = {"us-east-prod": "10.1.0", "eu-west-prod": "10.2.0", "ap-south-prod": "10.3.0"}
CLIENT = {"us-east-prod": "127.0.1.1", "eu-west-prod": "127.0.2.1", "ap-south-prod": "127.0.3.1"}
TTL = 5


def body(cluster: str, seq: int, *, ready: bool = True) -> dict[str, Any]:
    return {
        "seq": seq,
        "services": [
            {
                "namespace": "production",
                "name": "api",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [
                    {"address": f"{PREFIX[cluster]}.{i}", "conditions": {"ready": ready}}
                    for i in (1, 2)
                ],
            }
        ],
    }


@dataclass
class Stack:
    api: str
    session: aiohttp.ClientSession
    unbound_port: int
    seq: dict[str, int] = field(default_factory=dict)

    async def report(self, cluster: str, seq: int, *, ready: bool = True) -> None:
        headers = {"Authorization": f"Bearer {TOKENS[cluster]}"}
        url = f"{self.api}/v1/reports"
        async with self.session.post(
            url, json=body(cluster, seq, ready=ready), headers=headers
        ) as r:
            assert r.status == 200, await r.text()
        self.seq[cluster] = seq

    async def heartbeats(self) -> None:
        """What each cluster's agent does: renew its lease, so that only what a test
        changes changes (left alone, every cluster's lease would expire after 6 s)."""
        while True:
            for cluster, seq in list(self.seq.items()):
                headers = {"Authorization": f"Bearer {TOKENS[cluster]}"}
                url = f"{self.api}/v1/heartbeats"
                async with self.session.post(url, json={"seq": seq}, headers=headers) as r:
                    # 409 only when a test's report replaced the seq while this was sent.
                    stale = r.status == 409 and self.seq[cluster] != seq
                    assert r.status == 200 or stale, await r.text()
            await asyncio.sleep(0.5)

    async def ask(self, name: str, rdtype: str = "A", *, source: str = "127.0.0.1") -> Any:
        return await asyncio.to_thread(
            unbound.query, self.unbound_port, name, rdtype, source=source
        )

    async def cluster_for(self, source: str) -> str | None:
        """Which cluster's endpoints the client at ``source`` is answered with, via Unbound."""
        found = {a.rsplit(".", 1)[0] for a in addresses(await self.ask(NAME, source=source))}
        if len(found) != 1:
            return None
        prefix = found.pop()
        return next(k for k, v in PREFIX.items() if v == prefix)


@pytest.fixture
async def stack(redis_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    async with (
        # As deployed: ECS trusted from the forwarder only, and the forwarder never rate
        # limited (deploy/overlays/*: GLOBALDNS_RRL_EXEMPT is the cluster's pod network).
        registry(redis_url) as api,
        resolver(
            redis_url, ttl=TTL, ecs_trusted=("127.0.0.1/32",), rrl_exempt=("127.0.0.0/8",)
        ) as bound,
        aiohttp.ClientSession() as session,
    ):
        with unbound.running(bound.dns_port, tmp_path) as forwarder:
            stack = Stack(api, session, forwarder.port)
            for cluster in PREFIX:
                await stack.report(cluster, 1)
            beating = asyncio.create_task(stack.heartbeats())
            try:
                # Unbound answers from its cache for up to the TTL: the first answer may
                # be from before the reports arrived, so wait for every cluster.
                for cluster, source in CLIENT.items():
                    await eventually(lambda s=source, c=cluster: _is(stack, s, c))  # type: ignore[misc]
                yield stack
            finally:
                beating.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beating


async def _is(stack: Stack, source: str, cluster: str) -> bool:
    return await stack.cluster_for(source) == cluster


def soa_ttl(message: dns.message.Message) -> int:
    (soa,) = [rrset for rrset in message.authority if rrset.rdtype == dns.rdatatype.SOA]
    return int(soa.ttl)


async def test_each_client_is_answered_for_its_own_subnet_through_unbound(stack: Stack) -> None:
    # Unbound asks from 127.0.0.1 every time; only the client subnet it forwards (and its
    # per-subnet cache) tells the resolver where each client is.
    for cluster, source in CLIENT.items():
        reply = await stack.ask(NAME, source=source)
        assert reply.rcode() == dns.rcode.NOERROR
        assert {a.rsplit(".", 1)[0] for a in addresses(reply)} == {PREFIX[cluster]}
        (rrset,) = reply.answer
        assert rrset.ttl <= TTL  # never held past the resolver's TTL
    # A client in no known network: the default region's cluster.
    assert await stack.cluster_for("127.0.0.1") == "us-east-prod"


async def test_negative_answers_come_through_with_the_soa(stack: Stack) -> None:
    missing = await stack.ask("nothing.production.global.example.com")
    assert missing.rcode() == dns.rcode.NXDOMAIN and not missing.answer
    assert soa_ttl(missing) <= TTL
    nodata = await stack.ask(NAME, "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert soa_ttl(nodata) <= TTL


async def test_srv_through_unbound_points_at_names_that_resolve(stack: Stack) -> None:
    reply = await stack.ask(f"_http._tcp.{NAME}", "SRV", source=CLIENT["eu-west-prod"])
    assert reply.rcode() == dns.rcode.NOERROR
    (rrset,) = [r for r in reply.answer if r.rdtype == dns.rdatatype.SRV]
    targets = {(rr.port, rr.target.to_text()) for rr in rrset}
    assert {port for port, _ in targets} == {8080}
    for _port, target in targets:
        answer = await stack.ask(target, source=CLIENT["eu-west-prod"])
        (address,) = addresses(answer)
        assert address.startswith(PREFIX["eu-west-prod"] + ".")
        assert target.startswith(address.replace(".", "-") + ".")


async def test_failover_and_back_through_unbound(stack: Stack) -> None:
    europe = CLIENT["eu-west-prod"]
    # Every endpoint in eu-west goes unready: its clients move to the nearest other
    # region once Unbound's copy (at most TTL old) runs out.
    await stack.report("eu-west-prod", 2, ready=False)
    seen: list[str | None] = []

    async def moved() -> bool:
        got = await stack.cluster_for(europe)
        if not seen or seen[-1] != got:
            seen.append(got)
        return got == "us-east-prod"

    await eventually(moved, interval=0.25)
    # Straight from eu-west to us-east: never an empty or mixed answer on the way.
    assert seen in (["eu-west-prod", "us-east-prod"], ["us-east-prod"]), seen
    await stack.report("eu-west-prod", 3, ready=True)
    await eventually(lambda: _is(stack, europe, "eu-west-prod"), interval=0.25)
    # The others were never moved.
    assert await stack.cluster_for(CLIENT["ap-south-prod"]) == "ap-south-prod"
