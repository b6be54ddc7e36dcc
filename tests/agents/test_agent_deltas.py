"""Deltas against the real registry API and Redis: what the agent posts, and how it heals.

Every call the agent makes is recorded (:class:`tests.agents.recording.RecordingClient`),
so the tests check what went over the wire — a watch event or a probe flip is a delta
naming one service — as well as what the registry ended up holding.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from agents.agent import Agent
from agents.reporter import RegistryClient
from agents.static import StaticSource
from globaldns.redis_server import free_port
from registry.model import Report, Service
from tests.agents import k8s
from tests.agents.recording import RecordingClient, Sent
from tests.agents.test_agent import ADDRESSES, listeners
from tests.agents.test_kubernetes_agent import held, service_held
from tests.helpers import TOKENS, eventually, registry

WEB = "127.66.1.1"


def two_services(port: int) -> StaticSource:
    """``api`` (probed, two endpoints) and ``web`` (not probed)."""
    return StaticSource.model_validate(
        {
            "services": [
                {
                    "namespace": "production",
                    "name": "api",
                    "ports": [{"name": "http", "port": port}],
                    "probe": {"port": port, "interval_s": 0.05, "timeout_s": 0.2},
                    "endpoints": [{"address": a, "node": "n1"} for a in ADDRESSES],
                },
                {
                    "namespace": "production",
                    "name": "web",
                    "ports": [{"name": "http", "port": port}],
                    "endpoints": [{"address": WEB}],
                },
            ]
        }
    )


@contextlib.asynccontextmanager
async def agent_running(
    api: str, source: StaticSource, *, heartbeat: float
) -> AsyncIterator[tuple[Agent, RecordingClient]]:
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        client = RecordingClient(RegistryClient(session, api, TOKENS["us-east-prod"]))
        agent = Agent(
            cluster="us-east-prod", source=source, client=client, heartbeat_interval_s=heartbeat
        )
        task = asyncio.create_task(agent.run(stop))
        try:
            yield agent, client
        finally:
            stop.set()
            await task


def healthy(service: Service | None) -> dict[str, bool]:
    """Address → whether the agent's probe (where there is one) passes."""
    if service is None:
        return {}
    return {e.address: e.probe is None or e.probe.healthy for e in service.endpoints}


async def synced(redis_url: str, client: RecordingClient) -> None:
    """Until the whole state is acknowledged with both probes in and passing."""

    async def both() -> bool:
        api = healthy(await service_held(redis_url, "production/api"))
        return api == dict.fromkeys(ADDRESSES, True) and bool(client.wholes())

    await eventually(both)


async def post_whole(api: str, seq: int, services: tuple[Service, ...]) -> None:
    """A report the agent did not send (another pod, an earlier run): a gap in its seqs."""
    body = Report(seq=seq, services=services).model_dump_json()
    headers = {
        "Authorization": f"Bearer {TOKENS['us-east-prod']}",
        "Content-Type": "application/json",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{api}/v1/reports", data=body, headers=headers) as response,
    ):
        assert response.status == 200, await response.text()


async def flush(redis_url: str) -> None:
    client: Any = aioredis.Redis.from_url(redis_url)
    await client.flushall()
    await client.aclose()


async def test_a_probe_flip_is_a_delta_naming_its_service_alone(redis_url: str) -> None:
    port = free_port()
    async with (
        listeners(port) as servers,
        registry(redis_url) as api,
        agent_running(api, two_services(port), heartbeat=5.0) as (agent, client),
    ):
        await synced(redis_url, client)
        mark = len(client.sent)
        servers[ADDRESSES[1]].close()
        await servers[ADDRESSES[1]].wait_closed()

        async def second_down() -> bool:
            api_held = healthy(await service_held(redis_url, "production/api"))
            return api_held == {ADDRESSES[0]: True, ADDRESSES[1]: False}

        await eventually(second_down)
        reports = client.reports(mark)
        assert reports and all(s.delta and s.answer == "ok" for s in reports), reports
        for sent in reports:
            assert sent.report is not None
            assert [s.key for s in sent.report.services] == ["production/api"]
            assert sent.report.removed == ()
            assert sent.report.observed_ms is not None
        # The service nobody touched is still held as it was.
        assert healthy(await service_held(redis_url, "production/web")) == {WEB: True}
        assert agent.whole_reports == 1


async def test_registry_emptied_heartbeat_409_then_the_whole_state(redis_url: str) -> None:
    port = free_port()
    async with (
        listeners(port),
        registry(redis_url) as api,
        agent_running(api, two_services(port), heartbeat=0.2) as (_agent, client),
    ):
        await synced(redis_url, client)
        mark = len(client.sent)
        await flush(redis_url)  # Redis restarted empty, or failed over and lost it all
        await eventually(lambda: held(redis_url))
        after = client.sent[mark:]
        lost = next(i for i, s in enumerate(after) if s.answer == "lost")
        assert all(s.kind == "heartbeat" and s.answer == "ok" for s in after[:lost])
        # The very next report is the whole state, and it is accepted.
        first = next(s for s in after[lost:] if s.kind == "report")
        assert first.whole and first.answer == "ok"
        assert sorted(await held(redis_url)) == ["production/api", "production/web"]


@pytest.mark.parametrize("gap", ["another report", "registry emptied"])
async def test_a_delta_after_a_gap_gets_409_resync_and_the_whole_state_heals_it(
    redis_url: str, gap: str
) -> None:
    port = free_port()
    async with (
        listeners(port) as servers,
        registry(redis_url) as api,
        # Heartbeats far apart: the delta, not a heartbeat, is what finds the gap.
        agent_running(api, two_services(port), heartbeat=60.0) as (agent, client),
    ):
        await synced(redis_url, client)
        mark = len(client.sent)
        if gap == "another report":
            stale_view = (await held(redis_url))["production/web"]
            await post_whole(api, agent.seq + 1, (stale_view,))
        else:
            await flush(redis_url)
        servers[ADDRESSES[1]].close()
        await servers[ADDRESSES[1]].wait_closed()

        async def healed() -> dict[str, Service] | None:
            found = await held(redis_url)
            api_held = healthy(found.get("production/api"))
            if api_held != {ADDRESSES[0]: True, ADDRESSES[1]: False}:
                return None
            return found

        found = await eventually(healed)
        assert sorted(found) == ["production/api", "production/web"]
        reports = client.reports(mark)
        first, second = reports[0], reports[1]
        assert first.delta and first.answer == "Resync", first
        assert second.whole and second.answer == "ok", second
        assert second.seq > first.seq
        # The whole state carries the observation time of the change the delta lost.
        assert first.report is not None and second.report is not None
        assert second.report.observed_ms == first.report.observed_ms
        assert agent.resyncs >= 1


async def test_a_watch_event_is_a_delta_naming_its_service_alone(
    redis_url: str, tmp_path: Path
) -> None:
    async with k8s.apiserver(tmp_path) as server, registry(redis_url) as api:
        web, db = k8s.service("web"), k8s.service("db")
        web_pods = [k8s.Pod("w1", "10.1.0.1")]
        k8s.apply(server.store, web, web_pods)
        k8s.apply(server.store, db, [k8s.Pod("d1", "10.1.1.1")])
        async with k8s.k8s_agent(server, tmp_path, api) as pod:
            await eventually(lambda: held(redis_url))
            assert sorted(await held(redis_url)) == ["production/db", "production/web"]
            client = pod.client
            await eventually(lambda: client.wholes())
            mark = len(client.sent)

            # A pod turning not-ready: one EndpointSlice event, one service in the delta.
            web_pods[0].ready = False
            k8s.apply(server.store, web, web_pods)

            async def web_not_ready() -> bool:
                found = await service_held(redis_url, "production/web")
                return found is not None and found.endpoints[0].conditions.ready is False

            await eventually(web_not_ready)
            changed = client.reports(mark)
            assert changed and all(_names(s) == (["production/web"], []) for s in changed)
            assert all(s.answer == "ok" for s in changed)

            # A Service deleted: a delta removing it alone.
            mark = len(client.sent)
            server.store.delete("services", "production", "db")
            await eventually(lambda: _without_db(redis_url))
            removed = client.reports(mark)
            assert [_names(s) for s in removed] == [([], ["production/db"])]
            assert (await service_held(redis_url, "production/web")) is not None
            assert not client.wholes(mark)


def _names(sent: Sent) -> tuple[list[str], list[str]]:
    assert sent.report is not None and sent.report.is_delta
    return [s.key for s in sent.report.services], list(sent.report.removed)


async def _without_db(redis_url: str) -> bool:
    return "production/db" not in await held(redis_url)


async def test_a_large_whole_state_is_sent_gzip_compressed_and_accepted(redis_url: str) -> None:
    count = 300
    source = StaticSource.model_validate(
        {
            "services": [
                {
                    "namespace": "production",
                    "name": f"svc-{i:03d}",
                    "endpoints": [{"address": f"10.{n}.{i // 250}.{i % 250 + 1}"} for n in (1, 2)],
                }
                for i in range(count)
            ]
        }
    )
    encodings: list[str | None] = []

    async def on_request_start(
        session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestStartParams
    ) -> None:
        if params.url.path == "/v1/reports":
            encodings.append(params.headers.get("Content-Encoding"))

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_request_start)
    stop = asyncio.Event()
    async with (
        registry(redis_url) as api,
        aiohttp.ClientSession(trace_configs=[trace]) as session,
    ):
        client = RecordingClient(RegistryClient(session, api, TOKENS["us-east-prod"]))
        agent = Agent(cluster="us-east-prod", source=source, client=client)
        task = asyncio.create_task(agent.run(stop))
        try:
            await eventually(lambda: client.wholes())
        finally:
            stop.set()
            await task
        assert client.sent[0].answer == "ok"
        assert len(client.sent[0].report.model_dump_json()) > 64 * 1024  # type: ignore[union-attr]
        assert encodings[0] == "gzip"
        assert len(await held(redis_url)) == count
