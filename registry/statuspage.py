"""The status page: one HTML file, a JSON summary, and a server-sent event stream.

``GET /status`` is the page (``registry/static/status.html``: its script, style and map
are inline, and a Content-Security-Policy naming their hashes lets the browser load
nothing else). ``GET /status/summary`` is what it draws, as JSON. ``GET /status/events``
streams it: an ``event: summary`` whenever what it shows may have changed, an
``event: pulse`` (the Redis time and each lease's last heartbeat) every second in
between, and ``event: closing`` when the registry shuts down.

The cost does not grow with the number of browsers. One :class:`Hub` per registry
process does the reading, and only while a browser is connected: each tick one round
trip for the leases and the generation (O(clusters)); a full read and
:func:`registry.summary.summarize` (O(records)) only when the generation moved or a lease
turned fresh or stale, at most once a tick, and rarer when a build is slow (at most a
tenth of the time, :func:`registry.summary.next_build_at`). Each message is encoded once;
every browser has a :class:`Mailbox` that keeps only the newest summary and the newest
pulse, so a slow browser skips ahead instead of queueing, and its socket's back-pressure
holds only its own handler. At most ``GLOBALDNS_STATUS_STREAMS`` streams at once (503
with Retry-After past that).

The latest changes come from the registry's change stream in Redis (``gdns:chg``), not
from a ring of what this process saw: every replica writes there, so every replica's
page shows the same changes, including the ones written before it started.

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
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any

import structlog
from aiohttp import web

from registry import auth, summary
from registry.aio import sleep_or_stop
from registry.errors import StoreError
from registry.settings import RegistrySettings
from registry.store import Store
from registry.topology import Topology

log = structlog.get_logger("registry.statuspage")

TICK_S = 1.0
MAX_SHARE = 0.1
"""The largest share of the time the hub may spend building summaries."""
CHANGES_SHOWN = 15
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


def event(kind: str, data: dict[str, Any]) -> bytes:
    """One server-sent event (JSON has no raw newline, so it is one ``data:`` line)."""
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Mailbox:
    """What one browser has yet to be sent: the newest summary and the newest pulse."""

    def __init__(self) -> None:
        self._summary: bytes | None = None
        self._rest: bytes | None = None
        self._ready = asyncio.Event()
        self.closed = False

    def put(self, message: bytes, *, whole: bool) -> None:
        if whole:  # a summary makes every older message moot
            self._summary, self._rest = message, None
        else:
            self._rest = message
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def take(self) -> bytes | None:
        """The messages waiting, oldest first; None once closed."""
        while True:
            if self.closed:
                return None
            if self._summary is not None or self._rest is not None:
                out = (self._summary or b"") + (self._rest or b"")
                self._summary = self._rest = None
                self._ready.clear()
                return out
            self._ready.clear()
            await self._ready.wait()


class Hub:
    """Reads the registry for every connected browser at once (see the module's doc)."""

    def __init__(
        self,
        store: Store,
        topology: Topology,
        *,
        lease_ttl_ms: int,
        max_streams: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.topology = topology
        self.grants = topology.grants()
        self.lease_ttl_ms = lease_ttl_ms
        self.max_streams = max_streams
        self.clock = clock
        self.boxes: set[Mailbox] = set()
        self._latest: bytes | None = None
        self._pulse: bytes | None = None
        self._seen: summary.Fingerprint | None = None
        self._next_build = 0.0
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._failing = False
        self.builds = 0

    # -- browsers ---------------------------------------------------------------------

    def subscribe(self) -> Mailbox | None:
        """A mailbox with what is known now; None when the streams are at their cap."""
        if self._closing.is_set() or len(self.boxes) >= self.max_streams:
            return None
        box = Mailbox()
        if self._latest is not None:
            box.put(self._latest, whole=True)
        if self._pulse is not None:
            box.put(self._pulse, whole=False)
        self.boxes.add(box)
        self._wake.set()
        return box

    def unsubscribe(self, box: Mailbox) -> None:
        self.boxes.discard(box)
        if not self.boxes:  # nobody watching: what is held goes stale, build afresh next time
            self._latest = self._pulse = None
            self._seen = None

    def close(self) -> None:
        """End every stream and the loop (on shutdown)."""
        self._closing.set()
        self._wake.set()
        for box in list(self.boxes):
            box.close()

    # -- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        while not self._closing.is_set():
            if not self.boxes:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self.tick()
            await sleep_or_stop(self._closing, TICK_S)

    async def tick(self) -> None:
        """One round: contained, so nothing a tick meets stops the loop."""
        try:
            await self._tick()
        except StoreError as exc:
            if not self._failing:
                log.warning("status page cannot read the registry; retrying", error=str(exc))
            self._failing = True
            self._send(event("trouble", {"error": f"registry store unavailable: {exc}"}))
        except Exception:
            log.exception("status page tick failed")
            self._send(event("trouble", {"error": "the status page failed to read the registry"}))
        else:
            if self._failing:
                log.info("status page reads the registry again")
            self._failing = False

    async def _tick(self) -> None:
        leases = await self.store.leases()
        seen = summary.fingerprint(
            leases.generation,
            leases.last_seen_ms,
            now_ms=leases.now_ms,
            lease_ttl_ms=self.lease_ttl_ms,
        )
        if (seen != self._seen or self._latest is None) and self.clock() >= self._next_build:
            started = self.clock()
            content = await self.build()
            self._seen = summary.fingerprint_of(content)
            self._latest = event("summary", content)
            self._next_build = summary.next_build_at(
                self.clock(), self.clock() - started, tick_s=TICK_S, max_share=MAX_SHARE
            )
            self.builds += 1
            self._send(self._latest, whole=True)
        self._pulse = event("pulse", summary.pulse(leases.now_ms, leases.last_seen_ms))
        self._send(self._pulse)

    async def build(self) -> dict[str, Any]:
        view = await self.store.view()
        changes = await self.store.recent_changes(CHANGES_SHOWN)
        # Judging every endpoint is pure and takes a while on a large registry (0.35 s for
        # 30,000 endpoints): off the event loop, so reports and heartbeats go on meanwhile.
        return await asyncio.to_thread(
            summary.summarize,
            view,
            self.topology,
            lease_ttl_ms=self.lease_ttl_ms,
            grants=self.grants,
            changes=changes,
        )

    def _send(self, message: bytes, *, whole: bool = False) -> None:
        for box in self.boxes:
            box.put(message, whole=whole)


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
