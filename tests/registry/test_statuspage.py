"""The status page's routes and stream against a real registry on a real Redis.

What the page draws is tested in test_summary.py, and the page in a real browser in
tests/test_status_browser.py; here: the page is self-contained, the stream follows the
registry and builds only when something shown changed, the read token closes it, the
number of streams is capped, a Redis outage is told, and shutdown ends every stream.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from globaldns.redis_server import RedisProcess
from registry import store as store_mod
from registry.model import Report
from registry.statushub import Hub, Mailbox
from tests.helpers import ADMIN, TOKENS, registry, topology
from tests.registry.test_hostile import STATUS_ROUTES, registry_thread, send

US, EU = TOKENS["us-east-prod"], TOKENS["eu-west-prod"]
READER = "read-token-for-tests-0123456789"
Event = tuple[str, dict[str, Any]]


def report(seq: int, *ready: bool) -> dict[str, Any]:
    return {
        "seq": seq,
        "services": [
            {
                "namespace": "production",
                "name": "api",
                "ports": [{"name": "http", "port": 8080}],
                "endpoints": [
                    {"address": f"10.0.0.{i}", "conditions": {"ready": ok}}
                    for i, ok in enumerate(ready or (True,), start=1)
                ],
            }
        ],
    }


async def post(s: aiohttp.ClientSession, api: str, token: str, body: Any) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with s.post(f"{api}/v1/reports", json=body, headers=headers) as response:
        assert response.status == 200, await response.text()


async def events(response: aiohttp.ClientResponse) -> AsyncIterator[Event]:
    """The server-sent events of ``response``, as (event, JSON data)."""
    kind, data = "message", list[str]()
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if data:
                yield kind, json.loads("\n".join(data))
            kind, data = "message", []
        elif line.startswith("event:"):
            kind = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())


async def until(stream: AsyncIterator[Event], wanted: Callable[[Event], bool]) -> Event:
    """The first event that is ``wanted`` (the test's timeout is the hang guard)."""
    async for found in stream:
        if wanted(found):
            return found
    raise AssertionError("the stream ended first")


def cell(found: Event, cluster: str) -> dict[str, Any] | None:
    kind, data = found
    if kind != "summary" or not data["services"]:
        return None
    cells: dict[str, Any] = data["services"][0]["cells"]
    return cells.get(cluster)


async def test_the_page_loads_nothing_from_elsewhere(redis_url: str) -> None:
    async with (
        registry(redis_url) as api,
        aiohttp.ClientSession() as s,
        s.get(f"{api}/status") as response,
    ):
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
        policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        [inline] = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.S)
        digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
        assert f"{directive} 'sha256-{digest}'" in policy
    # Nothing fetched: no src, no stylesheet, no url() or @import, no absolute URL but
    # the SVG namespace (a name, never fetched).
    assert not re.search(r"\bsrc\s*=|<link[^>]+stylesheet|url\(|@import", page)
    assert set(re.findall(r"https?://[^\s\"'`]+", page)) == {"http://www.w3.org/2000/svg"}


async def test_the_stream_follows_the_registry(redis_url: str) -> None:
    async with registry(redis_url) as api, aiohttp.ClientSession() as s:
        await post(s, api, US, report(1, True, True))
        async with s.get(f"{api}/status/summary") as response:
            shown = await response.json()
        assert shown["services"][0]["cells"]["us-east-prod"]["state"] == "ok"
        assert [c["kind"] for c in shown["changes"]] == ["services"]

        async with s.get(f"{api}/status/events") as response:
            assert response.headers["Content-Type"] == "text/event-stream"
            stream = events(response)
            first = await until(stream, lambda e: e[0] == "summary")
            assert cell(first, "us-east-prod") == {"healthy": 2, "total": 2, "state": "ok"}
            pulse = await until(stream, lambda e: e[0] == "pulse")
            assert set(pulse[1]["last_seen_ms"]) == {"us-east-prod"}

            await post(s, api, US, report(2, True, False))
            await until(stream, lambda e: (cell(e, "us-east-prod") or {}).get("healthy") == 1)

            async with s.post(
                f"{api}/v1/clusters/us-east-prod/drain",
                json={"reason": "kernel upgrade", "by": "alice", "force": True},
                headers={"Authorization": f"Bearer {ADMIN}"},
            ) as drained:
                assert drained.status == 200
            _, data = await until(stream, lambda e: bool(e[0] == "summary" and e[1]["drains"]))
            [drain] = data["drains"]
            assert (drain["cluster"], drain["by"], drain["reason"]) == (
                "us-east-prod",
                "alice",
                "kernel upgrade",
            )
            assert data["changes"][0]["kind"] == "drain"


async def test_the_hub_builds_only_when_something_shown_changed(redis_url: str) -> None:
    now = [0.0]
    async with store_mod.opened(redis_url) as store:
        await store.write_report("us-east-prod", "us-east-1", Report.model_validate(report(1)))
        hub = Hub(store, topology(), lease_ttl_ms=60_000, max_streams=5, clock=lambda: now[0])
        box = hub.subscribe()
        assert box is not None

        async def sent() -> list[str]:
            return re.findall(r"event: (\w+)", (await box.take() or b"").decode())

        await hub.tick()
        assert hub.builds == 1 and await sent() == ["summary", "pulse"]
        await store.heartbeat("us-east-prod", 1)
        await hub.tick()  # a heartbeat shows as a pulse, not as a rebuild
        assert hub.builds == 1 and await sent() == ["pulse"]

        await store.write_report(
            "us-east-prod", "us-east-1", Report.model_validate(report(2, True, False))
        )
        await hub.tick()  # changed, but the last build was less than a tick ago
        assert hub.builds == 1 and await sent() == ["pulse"]
        now[0] += 1.0
        await hub.tick()
        assert hub.builds == 2 and await sent() == ["summary", "pulse"]

        # A browser that comes later gets what is known at once.
        late = hub.subscribe()
        assert late is not None
        assert re.findall(r"event: (\w+)", (await late.take() or b"").decode()) == [
            "summary",
            "pulse",
        ]
        hub.unsubscribe(late)
        hub.unsubscribe(box)
        hub.close()


async def test_a_slow_browser_is_sent_the_newest_only() -> None:
    box = Mailbox()
    box.put(b"pulse 1;", whole=False)
    box.put(b"summary 1;", whole=True)
    box.put(b"pulse 2;", whole=False)
    box.put(b"pulse 3;", whole=False)
    assert await box.take() == b"summary 1;pulse 3;"
    box.put(b"summary 2;", whole=True)
    box.put(b"summary 3;", whole=True)
    assert await box.take() == b"summary 3;"
    waiting = asyncio.ensure_future(box.take())
    await asyncio.sleep(0)
    box.close()
    assert await waiting is None


async def test_a_read_token_closes_the_page_to_a_plain_browser(redis_url: str) -> None:
    async with (
        registry(redis_url, read_token=(SecretStr(READER),)) as api,
        aiohttp.ClientSession() as s,
    ):
        for path in ("/status", "/status/summary", "/status/events"):
            async with s.get(f"{api}{path}") as response:
                assert response.status == 401, path
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
                message = (await response.json())["error"]
                assert "GLOBALDNS_READ_TOKEN" in message and "proxy" in message
            async with s.get(f"{api}{path}?token={READER}") as response:
                assert response.status == 401, path  # never from the URL
            # A proxy that authenticates the user adds the header: then it is served.
            for token in (READER, ADMIN):
                headers = {"Authorization": f"Bearer {token}"}
                async with s.get(f"{api}{path}", headers=headers) as response:
                    assert response.status == 200, path


async def test_streams_are_capped(redis_url: str) -> None:
    async with registry(redis_url, status_streams=1) as api, aiohttp.ClientSession() as s:
        for _ in range(3):  # a HEAD takes no place
            async with s.head(f"{api}/status/events") as head:
                assert head.status == 200
                assert head.headers["Content-Type"] == "text/event-stream"
        async with s.get(f"{api}/status/events") as first:
            await until(events(first), lambda e: e[0] == "summary")
            async with s.get(f"{api}/status/events") as second:
                assert second.status == 503
                assert second.headers["Retry-After"] == "10"
                assert "GLOBALDNS_STATUS_STREAMS" in (await second.json())["error"]
        # The first one's place is free once its handler has seen it go (its next write).
        while True:
            async with s.get(f"{api}/status/events") as again:
                if again.status == 200:
                    break
            await asyncio.sleep(0.2)


async def test_shutdown_ends_every_stream_cleanly(redis_url: str) -> None:
    seen: list[str] = []
    first = asyncio.Event()
    async with aiohttp.ClientSession() as s:
        async with registry(redis_url) as api:
            response = await s.get(f"{api}/status/events")

            async def read() -> None:
                async for kind, _data in events(response):
                    seen.append(kind)
                    first.set()

            reader = asyncio.create_task(read())
            await first.wait()
        # The registry has stopped (it waited for its handlers): the stream said so and
        # ended as a complete response, not cut off by aiohttp's shutdown timeout.
        await reader
        response.release()
    assert seen[0] == "summary" and seen[-1] == "closing"


async def test_a_redis_outage_is_told_and_the_stream_recovers(own_redis: RedisProcess) -> None:
    async with (
        registry(own_redis.url) as api,
        aiohttp.ClientSession() as s,
        s.get(f"{api}/status/events") as response,
    ):
        stream = events(response)
        await until(stream, lambda e: e[0] == "summary")
        own_redis.kill()
        _, data = await until(stream, lambda e: e[0] == "trouble")
        assert "registry store unavailable" in data["error"]
        own_redis.start()  # a new, empty server on the same port
        await until(stream, lambda e: e[0] == "pulse")


@pytest.mark.parametrize("read_token", [False, True])
def test_hostile_requests_get_a_4xx_that_says_why(redis_url: str, read_token: bool) -> None:
    """What test_hostile.py sends every other route, for the status page's: odd methods,
    tokens that are garbage, not UTF-8 or another role's, a token in the URL."""
    overrides = {"read_token": (SecretStr(READER),)} if read_token else {}
    tokens: list[bytes | None] = [None, b"\xff\xfe-not-utf-8", US.encode(), b"x" * 4000]
    with registry_thread(redis_url, **overrides) as address:
        for _method, path in STATUS_ROUTES:
            for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
                for token in tokens:
                    for query in ("", f"?token={READER}", "?" + "%ff" * 100):
                        lines = [f"{method} {path}{query} HTTP/1.1".encode(), b"Host: registry"]
                        lines.append(b"Connection: close")
                        if token is not None:
                            lines.append(b"Authorization: Bearer " + token)
                        request = b"\r\n".join(lines) + b"\r\n\r\n"
                        status, head, body = send(address, request)
                        assert status < 500, (request, body[:300])
                        if method != "GET" or read_token:
                            assert status in (401, 405), (request, status)
                            assert json.loads(body)["error"], request
                        else:
                            assert status == 200, (request, body[:300])
                            assert b"text/event-stream" in head or body
