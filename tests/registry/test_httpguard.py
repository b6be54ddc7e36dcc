"""The HTTP side's connection guard on real sockets: idle, half-sent and unread
connections are closed, and a full server makes room by closing the idle ones.

A small aiohttp application of its own (no Redis): the guard is shared by every
component's HTTP side (``registry.http.running``). Timeouts are short so the tests are
quick; nothing asserts how soon a connection closes, only that it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from registry.http import running
from registry.httpguard import ConnectionLimits, Guard
from tests.helpers import HANG_GUARD_S, eventually

LONG = 600.0  # a timeout not under test


def app(release: asyncio.Event | None = None) -> web.Application:
    async def small(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (64 << 20))

    async def slow(request: web.Request) -> web.Response:
        assert release is not None
        await release.wait()
        return web.json_response({"ok": True})

    application = web.Application()
    application.router.add_get("/small", small)
    application.router.add_get("/big", big)
    application.router.add_get("/slow", slow)
    return application


@contextlib.asynccontextmanager
async def serving(
    limits: ConnectionLimits, release: asyncio.Event | None = None
) -> AsyncIterator[tuple[int, Guard]]:
    guard = Guard(limits)
    async with running(app(release), "127.0.0.1", 0, guard=guard) as port:
        yield port, guard


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes (EOF or reset)."""
    data = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(65536), HANG_GUARD_S):
            data += chunk
    return data


async def test_an_idle_connection_is_closed() -> None:
    async with serving(ConnectionLimits(idle_timeout_s=0.2, header_timeout_s=LONG)) as (port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await closed_by_server(reader) == b""
        writer.close()


async def test_an_idle_keep_alive_connection_is_closed_after_its_last_answer() -> None:
    async with serving(ConnectionLimits(idle_timeout_s=0.2, header_timeout_s=LONG)) as (port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await closed_by_server(reader)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"ok": true}')
        writer.close()


async def test_a_half_sent_head_is_closed() -> None:
    limits = ConnectionLimits(idle_timeout_s=LONG, header_timeout_s=0.2)
    async with serving(limits) as (port, guard):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /small HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        assert await closed_by_server(reader) == b""
        assert guard.stats["header_timeout"] == 1
        writer.close()


async def test_a_response_nobody_reads_is_abandoned() -> None:
    limits = ConnectionLimits(idle_timeout_s=LONG, header_timeout_s=LONG, write_timeout_s=0.2)
    async with serving(limits) as (port, guard):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        _reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        await eventually(lambda: guard.stats["write_timeout"] == 1)
        await eventually(lambda: not guard.open)
        writer.close()


async def test_over_the_cap_the_idle_make_room_and_requests_are_served() -> None:
    limits = ConnectionLimits(idle_timeout_s=LONG, header_timeout_s=LONG, max_connections=8)
    async with serving(limits) as (port, guard), aiohttp.ClientSession() as session:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(40)]
        half = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
        for _, writer in half:
            writer.write(b"GET /small HTTP/1.1\r\nHost: x\r\n")
        for _ in range(20):
            async with session.get(f"http://127.0.0.1:{port}/small") as response:
                assert response.status == 200
        assert len(guard.open) <= 8
        assert guard.stats["evicted"] >= 60 - 8 and guard.stats["refused"] == 0
        for _, writer in idle + half:
            writer.close()


async def test_a_full_server_of_busy_connections_refuses_with_503() -> None:
    release = asyncio.Event()
    limits = ConnectionLimits(idle_timeout_s=LONG, header_timeout_s=LONG, max_connections=2)
    async with serving(limits, release) as (port, guard), aiohttp.ClientSession() as session:
        busy = [asyncio.create_task(session.get(f"http://127.0.0.1:{port}/slow")) for _ in range(2)]
        await eventually(lambda: sum(1 for c in guard.open.values() if c.busy) == 2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await closed_by_server(reader)
        assert answer.startswith(b"HTTP/1.1 503") and b'"reason": "connections"' in answer
        assert guard.stats["refused"] == 1
        writer.close()
        release.set()
        for response in await asyncio.gather(*busy):
            assert response.status == 200
            response.release()
