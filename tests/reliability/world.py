"""Three clusters with real agents, and a client in each region: the fault tests' world.

Each cluster runs a real :class:`agents.agent.Agent` (static source, no probes) that
reports to the registry API and renews its lease; a fleet can stop one cluster's agent
(that cluster dies) or point every agent at a new registry address (the registry came
back elsewhere). Answers are read back as the set of clusters they name.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

import aiohttp
import dns.exception
import dns.message
import dns.rcode

from agents.agent import Agent
from agents.reporter import RegistryClient
from agents.static import StaticSource
from tests.helpers import ADMIN, TOKENS, addresses, aquery, eventually

PREFIX = {"us-east-prod": "10.1.0", "eu-west-prod": "10.2.0", "ap-south-prod": "10.3.0"}
CLIENT = {"us-east-prod": "127.0.1.1", "eu-west-prod": "127.0.2.1", "ap-south-prod": "127.0.3.1"}
"""A client address in each cluster's region (the example topology's networks)."""
NAME = "api.production.global.example.com"
WEB = "web.production.global.example.com"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}


def static_source(cluster: str) -> StaticSource:
    endpoints = [{"address": f"{PREFIX[cluster]}.{i}"} for i in (1, 2)]
    return StaticSource.model_validate(
        {
            "services": [
                {"namespace": "production", "name": name, "endpoints": endpoints}
                for name in ("api", "web")
            ]
        }
    )


class Fleet:
    """One running agent per cluster."""

    def __init__(self, session: aiohttp.ClientSession, api: str, heartbeat_s: float) -> None:
        self.session = session
        self.api = api
        self.heartbeat_s = heartbeat_s
        self.running: dict[str, tuple[asyncio.Event, asyncio.Task[None], Agent]] = {}

    def start(self, cluster: str) -> Agent:
        stop = asyncio.Event()
        agent = Agent(
            cluster=cluster,
            source=static_source(cluster),
            client=RegistryClient(self.session, self.api, TOKENS[cluster]),
            heartbeat_interval_s=self.heartbeat_s,
        )
        task = asyncio.create_task(agent.run(stop), name=f"agent-{cluster}")
        self.running[cluster] = (stop, task, agent)
        return agent

    async def stop(self, cluster: str) -> None:
        stop, task, _agent = self.running.pop(cluster)
        stop.set()
        await task

    async def repoint(self, api: str) -> None:
        """Every agent now reports to ``api`` (restarted, as a pod would be)."""
        clusters = list(self.running)
        for cluster in clusters:
            await self.stop(cluster)
        self.api = api
        for cluster in clusters:
            self.start(cluster)

    async def close(self) -> None:
        for cluster in list(self.running):
            await self.stop(cluster)


@contextlib.asynccontextmanager
async def fleet(
    api: str, clusters: Iterable[str] = tuple(PREFIX), *, heartbeat_s: float = 0.3
) -> AsyncIterator[Fleet]:
    async with aiohttp.ClientSession() as session:
        running = Fleet(session, api, heartbeat_s)
        try:
            for cluster in clusters:
                running.start(cluster)
            yield running
        finally:
            await running.close()


def clusters_in(message: dns.message.Message) -> frozenset[str]:
    by_prefix = {prefix: cluster for cluster, prefix in PREFIX.items()}
    return frozenset(by_prefix[a.rsplit(".", 1)[0]] for a in addresses(message))


async def answered(port: int, client: str, name: str = NAME) -> frozenset[str] | str:
    """The clusters an answer names, or its rcode's name when it is not NOERROR."""
    reply = await aquery(port, name, source=client)
    if reply.rcode() != dns.rcode.NOERROR:
        return dns.rcode.to_text(reply.rcode())
    return clusters_in(reply)


async def goes_to(port: int, client: str, *clusters: str, name: str = NAME) -> bool:
    """Whether ``client``'s answer for ``name`` names exactly ``clusters``."""
    return await answered(port, client, name) == frozenset(clusters)


class Watcher:
    """Asks one name as one client over and over, keeping every answer (a DNS client
    during a fault)."""

    def __init__(self, port: int, client: str, name: str = NAME) -> None:
        self.port, self.client, self.name = port, client, name
        self.seen: list[frozenset[str] | str] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            try:
                self.seen.append(await answered(self.port, self.client, self.name))
            except dns.exception.Timeout:
                self.seen.append("timeout")
            await asyncio.sleep(0.02)

    async def __aenter__(self) -> Watcher:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def status(http_port: int) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{http_port}/v1/status") as r,
    ):
        result: dict[str, Any] = await r.json()
        return result


async def compared_again(http_port: int) -> None:
    """Wait until the resolver has compared everything with Redis twice more (so it has
    surely read what Redis holds now)."""
    before = (await status(http_port))["reconciles"]

    async def twice() -> bool:
        return bool((await status(http_port))["reconciles"] >= before + 2)

    await eventually(twice)


async def admin(method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, url, json=body, headers=ADMIN_HEADERS) as r,
    ):
        assert r.status == 200, (r.status, await r.text())
        result: dict[str, Any] = await r.json()
        return result
