"""What every registry replica does once a second besides answering requests.

1. **Beacon**: write its Redis time into ``gdns:registry``, so that resolvers can tell
   "the registry is not taking heartbeats" from "every cluster died" and hold the leases
   (:mod:`resolver.outages`).
2. **Decisions**: compare the newest decision revision Redis holds with the journal's
   (one GET); when they differ — Redis restarted empty, failed over to a replica that
   missed a write, or another replica made a decision — merge both ways: write back
   what Redis lost, keep what this replica had not seen. A full comparison also runs
   every :data:`FULL_CHECK_EVERY` ticks, whatever the revisions say.

Redis errors are logged once per outage and retried on the next tick; nothing here can
stop the API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from registry.aio import sleep_or_stop
from registry.decisions import merge
from registry.errors import StoreError
from registry.journal import Journal
from registry.store import Store

log = structlog.get_logger("registry.upkeep")

TICK_S = 1.0
FULL_CHECK_EVERY = 30


class Upkeep:
    def __init__(
        self,
        store: Store,
        journal: Journal,
        *,
        on_restored: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.store = store
        self.journal = journal
        self.on_restored = on_restored
        self.ticks = 0
        self.failing = False

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.tick()
            await sleep_or_stop(stop, TICK_S)

    async def tick(self) -> None:
        try:
            await self.store.beacon()
            await self.check_decisions(full=self.ticks % FULL_CHECK_EVERY == 0)
        except StoreError as exc:
            if not self.failing:
                log.warning("registry upkeep cannot reach Redis; retrying", error=str(exc))
            self.failing = True
        else:
            if self.failing:
                log.info("registry upkeep reaches Redis again")
            self.failing = False
        self.ticks += 1

    async def check_decisions(self, *, full: bool = False) -> None:
        if not full and await self.store.decisions_rev() == self.journal.rev:
            return
        give, take = merge(self.journal.held, await self.store.decisions())
        if take:
            await self.journal.record(take)
        if give:
            restored = await self.store.restore(give)
            if restored:
                self.on_restored(len(restored))
                log.warning(
                    "restored operator decisions Redis had lost",
                    decisions=[d.subject for d in restored],
                    cleared=[d.subject for d in restored if d.value is None],
                )
