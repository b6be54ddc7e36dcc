"""Running the real components on loopback for a test, and asking them things."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import dns.message
import dns.query
import dns.rdatatype
from pydantic import SecretStr

from registry import server as registry_server
from registry import topology as topology_mod
from registry.settings import RegistrySettings
from registry.topology import Topology
from resolver import main as resolver_main
from resolver.settings import ResolverSettings

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY_FILE = ROOT / "deploy" / "examples" / "topology.yaml"
ZONE = "global.example.com"
ADMIN = "admin-token-for-tests-0123456789"
TOKENS = {
    "us-east-prod": "us-east-token-0123456789abcdef",
    "eu-west-prod": "eu-west-token-0123456789abcdef",
    "ap-south-prod": "ap-south-token-0123456789abcdef",
}


def topology() -> Topology:
    return topology_mod.load(TOPOLOGY_FILE)


@contextlib.asynccontextmanager
async def _serving(
    start: Callable[[asyncio.Event, Callable[[Any], None]], Any],
) -> AsyncIterator[Any]:
    stop = asyncio.Event()
    bound: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(start(stop, lambda v: bound.done() or bound.set_result(v)))
    done, _ = await asyncio.wait([task, bound], return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    try:
        yield bound.result()
    finally:
        stop.set()
        await task


@contextlib.asynccontextmanager
async def registry(redis_url: str, **overrides: Any) -> AsyncIterator[str]:
    """The registry API on a free port; yields its base URL.

    Loopback endpoints are admitted (the tests' simulated endpoints listen on 127.x, as
    dev mode's do); ``allow_loopback_endpoints=False`` gives a production registry."""
    settings = RegistrySettings(
        **{
            "redis_url": redis_url,
            "port": 0,
            "topology": TOPOLOGY_FILE,
            "cluster_tokens": {k: SecretStr(v) for k, v in TOKENS.items()},
            "admin_token": SecretStr(ADMIN),
            "allow_loopback_endpoints": True,
            "log_json": False,
            **overrides,
        }
    )
    async with _serving(
        lambda stop, done: registry_server.serve(settings, stop=stop, started=done)
    ) as port:
        yield f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def resolver(
    redis_url: str, *, wait_for_sync: bool = True, **overrides: Any
) -> AsyncIterator[resolver_main.Bound]:
    """The resolver on free ports (DNS on UDP+TCP, and HTTP), once it has read Redis
    (``wait_for_sync=False``: as soon as it listens)."""
    settings = ResolverSettings(
        **{
            "redis_url": redis_url,
            "dns_port": 0,
            "http_port": 0,
            "topology": TOPOLOGY_FILE,
            "log_json": False,
            **overrides,
        }
    )
    async with _serving(
        lambda stop, done: resolver_main.serve(settings, stop=stop, started=done)
    ) as bound:
        if wait_for_sync:
            await eventually(lambda: _synced(bound.http_port))
        yield bound


async def _synced(port: int) -> bool:
    """The resolver has read Redis once. Not /readyz: that waits for some cluster to be
    registered, and many tests start the resolver before anything reports."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/v1/status") as response,
    ):
        return response.status == 200 and (await response.json())["last_sync_age_s"] is not None


async def ready(port: int) -> bool:
    """What a load balancer checks before it sends queries: /readyz."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/readyz") as response,
    ):
        return response.status == 200


def query(
    port: int,
    name: str,
    rdtype: str = "A",
    *,
    source: str = "127.0.0.1",
    tcp: bool = False,
    edns: bool = True,
    timeout: float = 2.0,
) -> dns.message.Message:
    message = dns.message.make_query(name, rdtype, use_edns=0 if edns else False)
    if tcp:
        return dns.query.tcp(message, "127.0.0.1", port=port, source=source, timeout=timeout)
    return dns.query.udp(message, "127.0.0.1", port=port, source=source, timeout=timeout)


async def aquery(port: int, name: str, rdtype: str = "A", **kwargs: Any) -> dns.message.Message:
    return await asyncio.to_thread(query, port, name, rdtype, **kwargs)


def addresses(message: dns.message.Message) -> list[str]:
    return [
        rr.to_text()
        for rrset in message.answer
        for rr in rrset
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
    ]


HANG_GUARD_S = 30.0
"""How long :func:`eventually` waits before calling a test hung. Only a hang guard: a
test never states how fast something happens (that is for ``bench/``), so this is far
beyond any slow run on a busy CI machine, and a passing test never waits for it."""


async def eventually(
    check: Callable[[], Any], *, timeout: float = HANG_GUARD_S, interval: float = 0.02
) -> Any:
    """Poll ``check`` (sync or async) until it returns a truthy value.

    ``timeout`` only guards against a hang; do not shorten it to assert a speed.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        if loop.time() > deadline:
            raise AssertionError(f"condition never met (gave up after {timeout}s; last: {last!r})")
        await asyncio.sleep(interval)
