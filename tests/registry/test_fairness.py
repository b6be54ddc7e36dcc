"""The registry API stays available to agents (issue #10, bugs 6 and 7), on real sockets:

* connections that are idle or send half a request are closed, and while a hundred of
  them are open the agents' calls are still served (the idle make room);
* a cluster flooding reports is throttled (429 with ``Retry-After`` and a JSON error
  naming the limit: one report in flight per cluster, and a rate), and another
  cluster's heartbeats are all answered meanwhile.

Only outcomes are asserted, never how fast: speed is measured in ``bench/abuse.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import pytest

from agents.reporter import RegistryClient, Throttled
from registry.model import Report
from tests.helpers import HANG_GUARD_S, TOKENS, registry

US, EU = TOKENS["us-east-prod"], TOKENS["eu-west-prod"]
LONG = 600.0  # a timeout not under test


def whole(seq: int, services: int = 1) -> dict[str, Any]:
    return {
        "seq": seq,
        "services": [
            {
                "namespace": "production",
                "name": f"svc{i}",
                "endpoints": [{"address": f"10.0.{i // 250}.{i % 250 + 1}"}],
            }
            for i in range(services)
        ],
    }


async def post(
    session: aiohttp.ClientSession, url: str, token: str, body: dict[str, Any]
) -> tuple[int, dict[str, str], Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with session.post(url, json=body, headers=headers) as response:
        return response.status, dict(response.headers), await response.json()


async def eu_lease_fresh(session: aiohttp.ClientSession, api: str) -> bool:
    async with session.get(f"{api}/v1/clusters") as response:
        clusters = (await response.json())["clusters"]
    return bool(next(c for c in clusters if c["name"] == "eu-west-prod")["lease_fresh"])


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    data = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(65536), HANG_GUARD_S):
            data += chunk
    return data


async def test_idle_and_half_sent_connections_are_closed(redis_url: str) -> None:
    timeouts = {
        "http_idle_timeout_s": 0.3,
        "http_header_timeout_s": 0.3,
        "http_body_timeout_s": 0.3,
    }
    async with registry(redis_url, **timeouts) as api:
        port = int(api.rsplit(":", 1)[1])
        idle = await asyncio.open_connection("127.0.0.1", port)
        head = await asyncio.open_connection("127.0.0.1", port)
        head[1].write(b"POST /v1/heartbeats HTTP/1.1\r\nHost: registry\r\n")
        body = await asyncio.open_connection("127.0.0.1", port)
        body[1].write(
            b"POST /v1/heartbeats HTTP/1.1\r\nHost: registry\r\n"
            b"Authorization: Bearer " + EU.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        assert await until_closed(idle[0]) == b""
        assert await until_closed(head[0]) == b""
        answer = await until_closed(body[0])
        assert answer.startswith(b"HTTP/1.1 408") and b'"reason": "body_timeout"' in answer
        for _, writer in (idle, head, body):
            writer.close()


async def test_heartbeats_are_served_while_a_hundred_idle_connections_are_open(
    redis_url: str,
) -> None:
    # Timeouts long, the cap small: it is the cap making room, not a timer.
    limits = {
        "http_idle_timeout_s": LONG,
        "http_header_timeout_s": LONG,
        "http_body_timeout_s": LONG,
        "http_max_connections": 32,
    }
    async with registry(redis_url, **limits) as api, aiohttp.ClientSession() as session:
        port = int(api.rsplit(":", 1)[1])
        agent = RegistryClient(session, api, EU)
        await agent.report(Report.model_validate(whole(1)))
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(100)]
        for i, (_, writer) in enumerate(held):
            if i % 2:  # half of them send half a request head, and no more
                writer.write(b"POST /v1/heartbeats HTTP/1.1\r\nHost: registry\r\n")
        # The agent's own session: a new connection for each call, as after a restart.
        for _ in range(20):
            async with aiohttp.ClientSession() as fresh:
                assert await RegistryClient(fresh, api, EU).heartbeat(1)
        assert await eu_lease_fresh(session, api)
        async with session.get(f"{api}/metrics") as response:
            metrics = await response.text()
        assert 'globaldns_registry_http_connections_closed_total{why="evicted"}' in metrics
        assert 'globaldns_registry_http_connections_closed_total{why="refused"} 0.0' in metrics
        for _, writer in held:
            writer.close()


POSTERS = 8


async def test_a_cluster_flooding_reports_does_not_starve_another_clusters_heartbeats(
    redis_url: str,
) -> None:
    limit = {"report_rate": 5.0, "report_burst": 5.0}
    async with registry(redis_url, **limit) as api, aiohttp.ClientSession() as session:
        status, _, _ = await post(session, f"{api}/v1/reports", EU, whole(1))
        assert status == 200
        flooding = asyncio.Event()
        statuses: list[int] = []
        throttled: list[tuple[dict[str, str], Any]] = []

        async def flood(poster: int) -> None:
            for i in range(25):
                seq = 1000 * (i + 1) + poster
                status, headers, body = await post(
                    session, f"{api}/v1/reports", US, whole(seq, services=200)
                )
                statuses.append(status)
                if status == 429:
                    throttled.append((headers, body))
                flooding.set()

        floods = [asyncio.create_task(flood(p)) for p in range(POSTERS)]
        await flooding.wait()
        beats: list[int] = []
        while not all(f.done() for f in floods):
            status, _, _ = await post(session, f"{api}/v1/heartbeats", EU, {"seq": 1})
            beats.append(status)
        await asyncio.gather(*floods)
        # Every heartbeat of the other cluster was answered, during the flood, and its
        # lease is fresh; the flooding cluster was told to come back later.
        assert beats and set(beats) == {200}
        assert await eu_lease_fresh(session, api)
        assert 200 in statuses and 429 in statuses and set(statuses) <= {200, 409, 429}
        for headers, body in throttled:
            assert int(headers["Retry-After"]) >= 1 and body["retry_after_s"] > 0
            assert body["reason"] == "rate_limited"
        limits = {body["limit"] for _, body in throttled}
        assert limits <= {"one report in flight per cluster", "reports per second"}
        # One report after another, faster than the rate: the bucket runs dry, and the
        # agent's client sorts the 429 as "retry later", not as a refusal.
        with pytest.raises(Throttled) as raised:
            for seq in range(10**6, 10**6 + 20):
                await RegistryClient(session, api, US).report(
                    Report.model_validate(whole(seq, services=200))
                )
        assert raised.value.retry_after_s > 0 and "GLOBALDNS_REPORT_RATE" in str(raised.value)
