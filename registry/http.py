"""Running an aiohttp application on a socket, as every component's HTTP side does."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web


@asynccontextmanager
async def running(
    app: web.Application, host: str, port: int, *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    """Serve ``app`` (over TLS with ``tls``) until the block exits; yields the bound port
    (useful with port 0)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=tls)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        bound = sockets[0].getsockname()[1] if sockets else port
        yield int(bound)
    finally:
        await runner.cleanup()


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
