"""The status page's routes: one HTML file, a JSON summary, and a server-sent event stream.

``GET /status`` is the page (``registry/static/status.html``: its script, style and map
are inline, and a Content-Security-Policy naming their hashes lets the browser load
nothing else). ``GET /status/summary`` is what it draws, as JSON. ``GET /status/events``
streams it from the :class:`registry.statushub.Hub`: an ``event: summary`` whenever what
it shows may have changed, an ``event: pulse`` (the Redis time and each lease's last
heartbeat) every second in between, ``event: trouble`` while Redis cannot be read, and
``event: closing`` when the registry shuts down. At most ``GLOBALDNS_STATUS_STREAMS``
streams at once (503 with Retry-After past that); they are ended from ``on_shutdown``,
before aiohttp waits for its handlers, so the registry stops promptly.

Access follows the inspection routes' rule (:func:`registry.auth.Tokens.may_read`): open
while no read token is configured; once ``GLOBALDNS_READ_TOKEN`` is set, all three routes
need the read (or admin) bearer token, which a browser cannot send by itself — so the
page is then for an authenticating proxy that adds the header, and a plain browser gets a
401 saying so. A token in the URL is not accepted: URLs end up in logs and histories.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from collections.abc import AsyncIterator
from importlib import resources

from aiohttp import web

from registry import auth
from registry.settings import RegistrySettings
from registry.statushub import Hub, event
from registry.store import Store
from registry.topology import Topology

RETRY_MS = 3000
"""How long a browser waits before reconnecting a stream that ended."""


def _page() -> tuple[bytes, str]:
    """The page and the Content-Security-Policy that allows its inline parts only."""
    html = resources.files("registry").joinpath("static/status.html").read_text("utf-8")

    def hashes(tag: str) -> str:
        found = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S)
        assert found, f"status.html has no <{tag}>"
        return " ".join(
            "'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() + "'"
            for b in found
        )

    policy = (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return html.encode(), policy


HUB: web.AppKey[Hub] = web.AppKey("status_hub", Hub)
TOKENS: web.AppKey[auth.Tokens] = web.AppKey("status_tokens", auth.Tokens)


def _refused(request: web.Request) -> web.Response | None:
    """The inspection routes' rule (see the module's doc); a 401 that says what to do."""
    presented = auth.bearer(request.headers.get("Authorization", ""))
    if request.app[TOKENS].may_read(presented):
        return None
    return web.json_response(
        {
            "error": "this registry has a read token (GLOBALDNS_READ_TOKEN): the status page "
            "needs the read or admin bearer token in an Authorization header, which a browser "
            "does not send by itself; reach it through a proxy that authenticates you and adds "
            "the header, or use GET /v1/clusters and /v1/services with the token"
        },
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="globaldns"'},
    )


async def get_page(request: web.Request) -> web.Response:
    refused = _refused(request)
    if refused is not None:
        return refused
    body, policy = PAGE
    return web.Response(
        body=body,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": policy,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


async def get_summary(request: web.Request) -> web.Response:
    refused = _refused(request)
    if refused is not None:
        return refused
    return web.json_response(await request.app[HUB].build(), headers={"Cache-Control": "no-cache"})


async def get_events(request: web.Request) -> web.StreamResponse:
    refused = _refused(request)
    if refused is not None:
        return refused
    headers = {
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",  # proxies that buffer (nginx) would hold the events
    }
    if request.method == "HEAD":  # no body, so no stream to hold a place for
        return web.Response(headers=headers)
    hub = request.app[HUB]
    box = hub.subscribe()
    if box is None:
        return web.json_response(
            {
                "error": f"the status page streams to at most {hub.max_streams} browsers at "
                "once (GLOBALDNS_STATUS_STREAMS); retry later"
            },
            status=503,
            headers={"Retry-After": "10"},
        )
    response = web.StreamResponse(headers=headers)
    try:
        await response.prepare(request)
        await response.write(f"retry: {RETRY_MS}\n\n".encode())
        while (messages := await box.take()) is not None:
            await response.write(messages)
        await response.write(event("closing", {}))
    except ConnectionResetError:  # the browser went away: its next write says so
        pass
    finally:
        hub.unsubscribe(box)
    return response


PAGE = _page()


def add_routes(
    app: web.Application,
    store: Store,
    topology: Topology,
    settings: RegistrySettings,
    tokens: auth.Tokens,
) -> None:
    """Serve the status page from ``app``: routes, the hub's loop, and ending the streams
    on shutdown (before aiohttp waits for handlers, so the registry stops promptly)."""
    hub = Hub(
        store,
        topology,
        lease_ttl_ms=int(settings.lease_ttl_s * 1000),
        max_streams=settings.status_streams,
    )
    app[HUB] = hub
    app[TOKENS] = tokens

    async def running(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(hub.run(), name="status-hub")
        yield
        hub.close()
        await task

    async def end_streams(app: web.Application) -> None:
        hub.close()

    app.cleanup_ctx.append(running)
    app.on_shutdown.append(end_streams)
    app.router.add_get("/status", get_page)
    app.router.add_get("/status/summary", get_summary)
    app.router.add_get("/status/events", get_events)
