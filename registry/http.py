"""Running an aiohttp application on a socket, as every component's HTTP side does.

Every connection goes through a :class:`~registry.httpguard.Guard` (idle, header and write
timeouts, and a cap that evicts the idle first), so no HTTP side of globaldns can be held
by clients that connect and do nothing.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

from registry.httpguard import Guard

LINGER_S = 2.0
"""After answering a request without reading all of its body (a 401 before a report, a
413), read and drop the rest this long so the client sees the answer, then close."""


@asynccontextmanager
async def running(
    app: web.Application,
    host: str,
    port: int,
    *,
    tls: ssl.SSLContext | None = None,
    guard: Guard | None = None,
) -> AsyncIterator[int]:
    """Serve ``app`` (over TLS with ``tls``) until the block exits; yields the bound port
    (useful with port 0)."""
    guard = guard or Guard()
    app.middlewares.insert(0, guard.middleware)
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=guard.limits.idle_timeout_s,
        lingering_time=LINGER_S,
    )
    await runner.setup()
    server: asyncio.Server | None = None
    try:
        assert runner.server is not None
        server = await asyncio.get_running_loop().create_server(
            guard.protocol_factory(runner.server), host, port, reuse_address=True, ssl=tls
        )
        yield int(server.sockets[0].getsockname()[1])
    finally:
        if server is not None:
            server.close()
        await runner.cleanup()
        guard.abort_all()
        if server is not None:
            await server.wait_closed()


def server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context for ``cert`` (the chain, PEM) and ``key``: TLS 1.2 or later."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def client_tls(ca_file: Path | None) -> ssl.SSLContext | None:
    """How a client verifies the registry: against ``ca_file`` (PEM) when given, else the
    system's trust store (None: aiohttp's default, which verifies)."""
    if ca_file is None:
        return None
    context = ssl.create_default_context(cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
