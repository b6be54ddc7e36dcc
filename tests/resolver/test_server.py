"""The resolver over real UDP and TCP sockets, fed by the real registry and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import aiohttp
import dns.edns
import dns.flags
import dns.rcode
import pytest

from globaldns.redis_server import RedisProcess
from tests.helpers import (
    ADMIN,
    TOKENS,
    ZONE,
    addresses,
    aquery,
    eventually,
    ready,
    registry,
    resolver,
)

NAME = "api.production.global.example.com"
PREFIX = {"us-east-prod": "10.1.0", "eu-west-prod": "10.2.0", "ap-south-prod": "10.3.0"}


def body(cluster: str, seq: int = 1) -> dict[str, Any]:
    return {
        "seq": seq,
        "services": [
            {
                "namespace": "production",
                "name": "api",
                "endpoints": [{"address": f"{PREFIX[cluster]}.{i}"} for i in (1, 2)],
            }
        ],
    }


async def report_all(session: aiohttp.ClientSession, api: str, seq: int = 1) -> None:
    for cluster in PREFIX:
        headers = {"Authorization": f"Bearer {TOKENS[cluster]}"}
        async with session.post(f"{api}/v1/reports", json=body(cluster, seq), headers=headers) as r:
            assert r.status == 200, await r.text()


def region_of(message: Any) -> str:
    found = {a.rsplit(".", 1)[0] for a in addresses(message)}
    assert len(found) == 1, found
    prefix = found.pop()
    return next(k for k, v in PREFIX.items() if v == prefix)


async def test_answers_follow_the_registry(redis_url: str) -> None:
    async with (
        registry(redis_url) as api,
        resolver(redis_url) as bound,
        aiohttp.ClientSession() as s,
    ):
        # An empty registry is ignorance, not an answer: not ready, and SERVFAIL (so a
        # forwarder asks another resolver) rather than an NXDOMAIN it would cache.
        assert not await ready(bound.http_port)
        port = bound.dns_port
        before = await aquery(port, NAME)
        assert before.rcode() == dns.rcode.SERVFAIL
        assert [o.code for o in before.options if o.otype == dns.edns.EDE] == [
            dns.edns.EDECode.NOT_READY
        ]
        await report_all(s, api)

        async def seen() -> bool:
            return bool(addresses(await aquery(port, NAME)))

        await eventually(seen)
        assert await ready(bound.http_port)
        assert (await aquery(port, f"nope.production.{ZONE}")).rcode() == dns.rcode.NXDOMAIN
        for source, cluster in [
            ("127.0.0.1", "us-east-prod"),
            ("127.0.1.1", "us-east-prod"),
            ("127.0.2.1", "eu-west-prod"),
            ("127.0.3.1", "ap-south-prod"),
        ]:
            for tcp in (False, True):
                reply = await aquery(port, NAME, source=source, tcp=tcp)
                assert reply.flags & dns.flags.AA
                assert reply.answer[0].ttl <= 5
                assert region_of(reply) == cluster, (source, tcp)

        # A drain moves European clients to the next-nearest region, an undrain back.
        drain = f"{api}/v1/clusters/eu-west-prod/drain"
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with s.post(drain, json={"reason": "test"}, headers=headers) as r:
            assert r.status == 200

        async def moved() -> bool:
            return region_of(await aquery(port, NAME, source="127.0.2.1")) == "us-east-prod"

        await eventually(moved)
        async with s.delete(drain, headers=headers) as r:
            assert r.status == 200

        async def back() -> bool:
            return region_of(await aquery(port, NAME, source="127.0.2.1")) == "eu-west-prod"

        await eventually(back)


# Long enough that the heartbeats below (one per cluster every ~0.25 s) keep the other
# clusters alive on a slow machine too; eu-west's expiry still comes soon.
TTL_S = 3.0


async def test_expired_lease_leaves_the_answers(redis_url: str) -> None:
    async with (
        registry(redis_url, lease_ttl_s=TTL_S) as api,
        resolver(redis_url, lease_ttl_s=TTL_S) as bound,
        aiohttp.ClientSession() as s,
    ):
        await report_all(s, api)
        port = bound.dns_port

        async def eu() -> bool:
            reply = await aquery(port, NAME, source="127.0.2.1")
            # Empty until the resolver has the first reports: not yet, not a failure.
            return bool(addresses(reply)) and region_of(reply) == "eu-west-prod"

        await eventually(eu)

        # Keep every cluster but eu-west alive (a heartbeat each per check); eu-west's
        # lease runs out and its clients move on. The 30 s is only a hang guard.
        async def eu_gone() -> bool:
            for cluster in ("us-east-prod", "ap-south-prod"):
                headers = {"Authorization": f"Bearer {TOKENS[cluster]}"}
                async with s.post(f"{api}/v1/heartbeats", json={"seq": 1}, headers=headers) as r:
                    assert r.status == 200
            return not await eu()

        await eventually(eu_gone, interval=0.25)
        assert region_of(await aquery(port, NAME, source="127.0.2.1")) == "us-east-prod"


async def test_redis_death_and_empty_restart_never_break_answers(own_redis: RedisProcess) -> None:
    url = own_redis.url
    async with registry(url) as api, resolver(url) as bound, aiohttp.ClientSession() as s:
        await report_all(s, api)
        port = bound.dns_port

        async def eu() -> bool:
            reply = await aquery(port, NAME, source="127.0.2.1")
            # Empty until the resolver has the first reports: not yet, not a failure.
            return bool(addresses(reply)) and region_of(reply) == "eu-west-prod"

        await eventually(eu)
        own_redis.kill()
        for _ in range(20):  # two seconds without Redis: the same answers, never SERVFAIL
            reply = await aquery(port, NAME, source="127.0.2.1")
            assert reply.rcode() == dns.rcode.NOERROR
            assert region_of(reply) == "eu-west-prod"
            await asyncio.sleep(0.1)
        own_redis.start()  # new and empty: the clusters are carried over, not dropped
        await asyncio.sleep(1.5)
        assert region_of(await aquery(port, NAME, source="127.0.2.1")) == "eu-west-prod"
        await report_all(s, api, seq=2)
        assert region_of(await aquery(port, NAME, source="127.0.2.1")) == "eu-west-prod"

        async def status() -> Any:
            async with s.get(f"http://127.0.0.1:{bound.http_port}/v1/status") as r:
                body = await r.json()
            return body if sorted(body["live_clusters"]) == sorted(PREFIX) else None

        assert (await eventually(status))["sync_errors"] >= 1
        async with s.get(f"http://127.0.0.1:{bound.http_port}/metrics") as r:
            metrics = await r.text()
        assert "globaldns_resolver_sync_errors_total" in metrics
        assert 'globaldns_resolver_responses_total{rcode="noerror"}' in metrics
        assert "globaldns_resolver_live_clusters 3.0" in metrics


async def test_tcp_pipelining_and_zero_length(redis_url: str) -> None:
    import dns.message

    async with resolver(redis_url) as bound:
        reader, writer = await asyncio.open_connection("127.0.0.1", bound.dns_port)
        queries = [dns.message.make_query(f"n{i}.global.example.com", "A") for i in range(3)]
        wires = [q.to_wire() for q in queries]
        writer.write(b"".join(len(w).to_bytes(2, "big") + w for w in wires))
        await writer.drain()
        for q in queries:
            length = int.from_bytes(await reader.readexactly(2), "big")
            reply = dns.message.from_wire(await reader.readexactly(length))
            # Nothing registered yet: SERVFAIL, each in its turn.
            assert reply.id == q.id and reply.rcode() == dns.rcode.SERVFAIL
        writer.write(b"\x00\x00")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), timeout=30) == b""
        writer.close()


async def test_garbage_over_udp_does_not_stop_the_server(redis_url: str) -> None:
    async with resolver(redis_url) as bound:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for junk in (b"", b"\x00", b"\xff" * 11, b"\x12\x34" + b"\xff" * 100):
                sock.sendto(junk, ("127.0.0.1", bound.dns_port))
        reply = await aquery(bound.dns_port, "global.example.com", "SOA")
        assert reply.rcode() == dns.rcode.NOERROR


LONG = 600.0  # a timeout not under test


async def _status(http_port: int) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{http_port}/v1/status") as response,
    ):
        return dict(await response.json())


async def _connect(port: int, source: str, *, rcvbuf: int | None = None) -> Any:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((source, 0))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock)


async def test_a_tcp_client_that_never_reads_is_disconnected(redis_url: str) -> None:
    import dns.message

    settings: dict[str, Any] = {
        "tcp_write_timeout_s": 0.2,
        "tcp_idle_timeout_s": LONG,
        "tcp_read_timeout_s": LONG,
    }
    async with resolver(redis_url, **settings) as bound:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", bound.dns_port))
            query = dns.message.make_query(ZONE, "SOA").to_wire()
            # Queries pipelined, answers never read: once the kernel's buffers (a few MB
            # on loopback) and the server's are full, a write waits, and times out.
            sending = asyncio.create_task(
                loop.sock_sendall(sock, (len(query).to_bytes(2, "big") + query) * 100_000)
            )

            async def timed_out() -> bool:
                return bool((await _status(bound.http_port))["stats"].get("tcp_write_timeout"))

            await eventually(timed_out)
            with contextlib.suppress(ConnectionError):  # the unread answers were dropped
                while await loop.sock_recv(sock, 1 << 16):
                    pass
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sending
        # Others are still answered over TCP.
        assert (await aquery(bound.dns_port, ZONE, "SOA", tcp=True)).rcode() == dns.rcode.NOERROR


async def test_sources_filling_the_tcp_cap_make_room_for_another(redis_url: str) -> None:
    settings: dict[str, Any] = {
        "tcp_max_connections": 8,
        "tcp_max_per_source": 4,
        "tcp_idle_timeout_s": LONG,
        "tcp_read_timeout_s": LONG,
        "tcp_write_timeout_s": LONG,
    }
    async with resolver(redis_url, **settings) as bound:
        held = [
            await _connect(bound.dns_port, source)
            for source in ("127.0.5.1", "127.0.5.2")
            for _ in range(4)
        ]

        async def all_held() -> bool:
            return (await _status(bound.http_port))["stats"].get("tcp_refused", 0) == 0 and all(
                not r.at_eof() for r, _ in held
            )

        assert await all_held()
        # The cap is full of the two sources' idle connections; a third source is served.
        for _ in range(3):
            reply = await aquery(bound.dns_port, ZONE, "SOA", tcp=True, source="127.0.6.1")
            assert reply.rcode() == dns.rcode.NOERROR
        stats = (await _status(bound.http_port))["stats"]
        assert stats["tcp_evicted"] >= 1
        # A flooding source at its own cap is refused rather than served at others' cost.
        with pytest.raises((EOFError, ConnectionError)):
            await aquery(bound.dns_port, ZONE, "SOA", tcp=True, source="127.0.5.1")
        for _, writer in held:
            writer.close()
