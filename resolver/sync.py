"""Keeping the snapshot current: full load, then the change stream, then resync.

The loop, in the order it happens:

1. **Full load** — one consistent read of the whole registry (:meth:`Store.view`);
   clusters the previous snapshot had but Redis lacks are carried over (see
   :func:`resolver.snapshot.carry_over`).
2. **Follow** — ``XREAD BLOCK`` on the change stream from the position the load matched;
   each entry names a cluster, which is re-read. After every wake-up (an entry or the
   block timeout) the leases are read with the Redis clock, and that time becomes the
   *sync time* leases are judged against.
3. **Resync** — a full load again every ``resync_interval``, after any error, and when
   the generation goes backwards (Redis restarted or failed over).

A new snapshot is published only when something an answer depends on changed: the
records, a drain, or which clusters' leases are fresh. If Redis is unreachable, nothing
is published and the last snapshot keeps answering: its sync time does not move, so its
leases do not expire behind its back.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import structlog

from registry.aio import sleep_or_stop
from registry.errors import StoreError
from registry.model import ClusterState, PolicyOverride
from registry.store import Store
from resolver import snapshot as snapshots
from resolver.snapshot import Snapshot

log = structlog.get_logger("resolver.sync")

Publish = Callable[[Snapshot], None]


class Follower:
    def __init__(
        self,
        store: Store,
        publish: Publish,
        *,
        lease_ttl_ms: int,
        block_ms: int = 1000,
        resync_interval_s: float = 30.0,
        forget_after_ms: int = 3_600_000,
    ) -> None:
        self.store = store
        self.publish = publish
        self.lease_ttl_ms = lease_ttl_ms
        self.block_ms = block_ms
        self.resync_interval_s = resync_interval_s
        self.forget_after_ms = forget_after_ms
        self.current: Snapshot = snapshots.EMPTY
        self.clusters: dict[str, ClusterState] = {}
        self.policies: dict[str, PolicyOverride] = {}
        self.generation = 0
        self.stream_id = "0-0"
        self.errors = 0
        self.last_sync_monotonic = 0.0
        self.syncs = 0

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.1
        while not stop.is_set():
            try:
                await self.full_load()
                backoff = 0.1
                await self._follow(stop)
            except StoreError as exc:
                self.errors += 1
                log.warning(
                    "registry unreachable; answering from the last snapshot", error=str(exc)
                )
                delay = backoff * (0.5 + random.random())
                backoff = min(backoff * 2, 5.0)
                await sleep_or_stop(stop, delay)

    async def full_load(self) -> None:
        view = await self.store.view()
        clusters = snapshots.carry_over(
            self.clusters, view.clusters, sync_ms=view.now_ms, forget_after_ms=self.forget_after_ms
        )
        carried = sorted(set(self.clusters) - {c.name for c in view.clusters})
        if carried:
            log.warning(
                "clusters missing from the registry kept until their leases expire",
                clusters=carried,
            )
        self.clusters = {c.name: c for c in clusters}
        self.policies = dict(view.policies)
        self.generation = view.generation
        self.stream_id = view.stream_id
        self._rebuild(view.now_ms, force=True)

    async def _follow(self, stop: asyncio.Event) -> None:
        deadline = time.monotonic() + self.resync_interval_s
        while not stop.is_set() and time.monotonic() < deadline:
            changes = await self.store.changes(self.stream_id, block_ms=self.block_ms)
            changed = False
            for change in changes:
                self.stream_id = change.id
                if change.kind == "policy":
                    self.policies = await self.store.policies()
                    changed = True
                    continue
                state = await self.store.cluster(change.cluster)
                if state is None:
                    changed |= self.clusters.pop(change.cluster, None) is not None
                else:
                    self.clusters[change.cluster] = state
                    changed = True
            leases = await self.store.leases()
            if leases.generation < self.generation:
                log.warning(
                    "registry generation went backwards; reloading",
                    had=self.generation,
                    now=leases.generation,
                )
                return
            self.generation = max(self.generation, leases.generation)
            for name, seen in leases.last_seen_ms.items():
                state = self.clusters.get(name)
                if state is not None and state.last_seen_ms != seen:
                    self.clusters[name] = state.model_copy(update={"last_seen_ms": seen})
            self._rebuild(leases.now_ms, force=changed)

    def _rebuild(self, now_ms: int, *, force: bool) -> None:
        self.last_sync_monotonic = time.monotonic()
        self.syncs += 1
        candidate = snapshots.build(
            self.clusters.values(),
            generation=self.generation,
            sync_ms=now_ms,
            lease_ttl_ms=self.lease_ttl_ms,
            policies=self.policies,
            previous=self.current,
        )
        if force or candidate.signature() != self.current.signature():
            self.publish(candidate)
        # Otherwise nothing an answer depends on moved: the published snapshot (and every
        # pre-packed answer) stays, but the carried state (spill timers, last known good)
        # and the sync time move on with the candidate.
        self.current = candidate
