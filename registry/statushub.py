"""The status page's reader: one per registry process, for every connected browser.

Reads Redis only while a browser is connected. Each tick (a second) it makes one round
trip for the leases, the generation and the Redis time (O(clusters)) and sends a
*pulse*; it reads the whole view and builds a *summary* (O(records),
:func:`registry.summary.summarize`) only when the generation moved or a lease turned
fresh or stale, at most once a tick and at most :data:`MAX_SHARE` of the time
(:func:`registry.summary.next_build_at`). Each message is encoded once; every browser has
a :class:`Mailbox` that keeps only the newest summary and the newest pulse, so a slow
browser skips ahead instead of queueing, and its socket's back-pressure holds only its
own handler. What a tick meets (Redis down, a bug) is contained: the browsers are told
(``event: trouble``) and the loop goes on.

The latest changes come from the registry's change stream in Redis (``gdns:chg``), not
from a ring of what this process saw: every replica writes there, so every replica's
page shows the same changes, including the ones written before it started.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import structlog

from registry import summary
from registry.aio import sleep_or_stop
from registry.errors import StoreError
from registry.store import Store
from registry.topology import Topology

log = structlog.get_logger("registry.statushub")

TICK_S = 1.0
MAX_SHARE = 0.1
"""The largest share of the time the hub may spend building summaries."""
CHANGES_SHOWN = 15


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
            leases.generation or 0,
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
