"""Which HTTP connections a server keeps: timeouts for the slow and the idle, and a cap.

aiohttp bounds none of this by default: a connection that never sends a request, sends
half a header, or never reads its answer is held for an hour or more, and there is no
limit on how many. Issue #10 measured it: idle and half-sent connections held past
100 s, and enough of them (the process's file descriptors are the real cap) locked the
agents' heartbeats out. Here, each connection is wrapped in a small protocol that
forwards every call to aiohttp's and adds:

* **idle**: a connection with no request under way closes ``idle_timeout_s`` after it
  opened or answered its last request (aiohttp's keep-alive timer, set from here);
* **header**: once a request's first byte arrives, its whole head must follow within
  ``header_timeout_s`` (the body has its own bound: :func:`registry.bodies.read`);
* **write**: a response the client does not read — the socket's buffer stays full —
  for ``write_timeout_s`` is abandoned and the connection aborted;
* **cap**: at most ``max_connections``. A new connection over the cap closes the
  connection that has gone longest without a request and has none under way (the idle
  and the half-sent, which are what a slowloris holds; an agent sends something every
  two seconds), and is refused with a 503 only when every connection is busy.

"Busy" is known from a middleware that :func:`registry.http.running` adds to the
application: from the handler's start to its end.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import cast

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    idle_timeout_s: float = 20.0
    header_timeout_s: float = 10.0
    write_timeout_s: float = 10.0
    max_connections: int = 512


_REFUSED_BODY = json.dumps(
    {"error": "too many connections, all busy: retry", "reason": "connections"}
).encode()
REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: " + str(len(_REFUSED_BODY)).encode() + b"\r\n\r\n" + _REFUSED_BODY
)


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the guard's timers around it."""

    def __init__(self, inner: asyncio.Protocol, guard: Guard) -> None:
        self.inner = inner
        self.guard = guard
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.admitted = False
        self.busy = 0
        self.served = self.loop.time()
        """When the connection opened or last finished a request: the eviction order."""
        self._header: asyncio.TimerHandle | None = None
        self._write: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol: forwarded ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if not self.guard.admit(self):
            self.transport.write(REFUSED)
            self.transport.close()
            return
        self.admitted = True
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return
        if not self.busy and self._header is None:
            self._header = self.loop.call_later(
                self.guard.limits.header_timeout_s, self._expire, "header_timeout"
            )
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def pause_writing(self) -> None:
        if self._write is None:
            self._write = self.loop.call_later(
                self.guard.limits.write_timeout_s, self._expire, "write_timeout"
            )
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        self._cancel_write()
        if self.admitted:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header()
        self._cancel_write()
        self.guard.forget(self)
        if self.admitted:
            self.inner.connection_lost(exc)

    # -- the guard's side ----------------------------------------------------------------

    def begin(self) -> None:
        self.busy += 1
        self._cancel_header()

    def end(self) -> None:
        self.busy -= 1
        self.served = self.loop.time()

    def close(self, why: str) -> None:
        self.guard.stats[why] += 1
        if self.transport is not None:
            self.transport.close()

    def _expire(self, why: str) -> None:
        self._header = self._write = None
        self.guard.stats[why] += 1
        if self.transport is not None:
            self.transport.abort()  # nothing buffered is worth waiting for

    def _cancel_header(self) -> None:
        if self._header is not None:
            self._header.cancel()
            self._header = None

    def _cancel_write(self) -> None:
        if self._write is not None:
            self._write.cancel()
            self._write = None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Guard:
    """Admission and timers for the connections of one server."""

    def __init__(self, limits: ConnectionLimits | None = None) -> None:
        self.limits = limits or ConnectionLimits()
        self.open: dict[asyncio.BaseTransport, _Guarded] = {}
        self.stats: Counter[str] = Counter()
        """Connections closed by the guard, by why: header_timeout, write_timeout,
        evicted, refused."""

    def protocol_factory(
        self, inner: Callable[[], asyncio.Protocol]
    ) -> Callable[[], asyncio.Protocol]:
        return lambda: _Guarded(inner(), self)

    def admit(self, conn: _Guarded) -> bool:
        assert conn.transport is not None
        if len(self.open) >= self.limits.max_connections:
            idle = [c for c in self.open.values() if not c.busy]
            if not idle:
                self.stats["refused"] += 1
                return False
            victim = min(idle, key=lambda c: c.served)
            self.forget(victim)
            victim.close("evicted")
        self.open[conn.transport] = conn
        return True

    def forget(self, conn: _Guarded) -> None:
        if conn.transport is not None and self.open.get(conn.transport) is conn:
            del self.open[conn.transport]

    def abort_all(self) -> None:
        for conn in list(self.open.values()):
            self.forget(conn)
            if conn.transport is not None:
                conn.transport.abort()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks the connection busy while its request is handled (it is not evicted)."""
        conn = self.open.get(request.transport) if request.transport is not None else None
        if conn is None:
            return await handler(request)
        conn.begin()
        try:
            return await handler(request)
        finally:
            conn.end()


class GuardCollector(Collector):
    """The guard's connections for Prometheus, named ``<prefix>_http_connections...``."""

    def __init__(self, guard: Guard, prefix: str) -> None:
        self.guard = guard
        self.prefix = prefix

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            f"{self.prefix}_http_connections",
            "HTTP connections open",
            value=len(self.guard.open),
        )
        closed = CounterMetricFamily(
            f"{self.prefix}_http_connections_closed",
            "HTTP connections the server closed: header_timeout, write_timeout (a response "
            "not read), evicted (idle, to admit another over the cap), refused (503: over "
            "the cap, every connection busy); idle keep-alive closes are not counted",
            labels=["why"],
        )
        for why in ("header_timeout", "write_timeout", "evicted", "refused"):
            closed.add_metric([why], self.guard.stats[why])
        yield closed
