"""An agent against the real registry API and Redis, probing real listeners."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from agents.agent import Agent
from agents.reporter import RegistryClient
from agents.static import StaticSource
from globaldns.redis_server import RedisProcess, free_port
from tests.helpers import TOKENS, eventually, registry

ADDRESSES = ["127.66.0.1", "127.66.0.2"]


async def _accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


@contextlib.asynccontextmanager
async def listeners(port: int) -> AsyncIterator[dict[str, asyncio.Server]]:
    servers = {a: await asyncio.start_server(_accept, a, port) for a in ADDRESSES}
    try:
        yield servers
    finally:
        for server in servers.values():
            server.close()


def source(port: int) -> StaticSource:
    return StaticSource.model_validate(
        {
            "services": [
                {
                    "namespace": "production",
                    "name": "api",
                    "ports": [{"name": "http", "port": port}],
                    "probe": {
                        "port": port,
                        "interval_s": 0.1,
                        "timeout_s": 0.2,
                        "rise": 2,
                        "fall": 2,
                    },
                    "endpoints": [{"address": a, "node": "n1"} for a in ADDRESSES],
                }
            ]
        }
    )


@contextlib.asynccontextmanager
async def agent_running(api: str, port: int, heartbeat: float) -> AsyncIterator[Agent]:
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        agent = Agent(
            cluster="us-east-prod",
            source=source(port),
            client=RegistryClient(session, api, TOKENS["us-east-prod"]),
            heartbeat_interval_s=heartbeat,
        )
        task = asyncio.create_task(agent.run(stop))
        try:
            yield agent
        finally:
            stop.set()
            await task


async def endpoints(api: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{api}/v1/services/production/api") as r,
    ):
        if r.status != 200:
            return {}
        body = await r.json()
    return {e["address"]: e for e in body["endpoints"]}


async def test_probe_verdicts_reach_the_registry(redis_url: str) -> None:
    port = free_port()
    async with (
        listeners(port) as servers,
        registry(redis_url) as api,
        agent_running(api, port, heartbeat=0.5) as agent,
    ):

        async def both_healthy() -> bool:
            found = await endpoints(api)
            return len(found) == 2 and all(e["healthy"] for e in found.values())

        await eventually(both_healthy)
        servers[ADDRESSES[1]].close()
        await servers[ADDRESSES[1]].wait_closed()

        async def second_down() -> Any:
            found = await endpoints(api)
            return found and not found[ADDRESSES[1]]["healthy"] and found

        found = await eventually(second_down)
        assert found[ADDRESSES[0]]["healthy"]
        assert found[ADDRESSES[1]]["reasons"][0].startswith("probe failing: tcp")
        assert agent.heartbeats >= 0


async def test_registry_heals_after_redis_restarts_empty(own_redis: RedisProcess) -> None:
    port = free_port()
    heartbeat = 0.5
    async with (
        listeners(port),
        registry(own_redis.url) as api,
        agent_running(api, port, heartbeat=heartbeat) as agent,
    ):
        await eventually(lambda: endpoints(api))
        reports = agent.reports
        own_redis.kill()
        await asyncio.sleep(heartbeat * 2)  # the agent keeps its state while Redis is away
        own_redis.start()
        # The next heartbeat finds its lease gone and the agent sends its whole state
        # again: the registry heals by a new report (how soon is the schedule's
        # fake-clock tests' business, not this one's).
        await eventually(lambda: endpoints(api))
        assert agent.reports > reports


async def test_a_burst_of_changes_is_one_report(redis_url: str) -> None:
    port = free_port()
    async with (
        listeners(port) as servers,
        registry(redis_url) as api,
        agent_running(api, port, heartbeat=5.0) as agent,
    ):
        await eventually(lambda: len(agent.tracks) == 2 and agent.reports >= 1)
        before = agent.reports
        for server in servers.values():
            server.close()

        async def all_down() -> bool:
            found = await endpoints(api)
            return bool(found) and not any(e["healthy"] for e in found.values())

        await eventually(all_down)
        # Both endpoints fell in the same probe round: one report, not two.
        assert agent.reports == before + 1
