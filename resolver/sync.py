"""Keeping the snapshot current: reconcile, then follow the change stream.

The loop, in the order it happens:

1. **Reconcile** — note the newest change-stream entry, then compare every cluster's
   service digests with the ones held and read only the records that differ (all of
   them the first time). Clusters the registry lacks but the resolver holds are carried
   over (Redis restarted empty, or failed over and lost the tail): their agents report
   again within a heartbeat; if they do not, their lease expires the ordinary way.
2. **Follow** — ``XREAD BLOCK`` from the noted entry. Each entry names a cluster and the
   services it changed; only those are read (HMGET) and judged again. After every
   wake-up the leases are read with the Redis clock, and that time becomes the *sync
   time* leases are judged against. The block ends early when a lease is due to run out,
   so an expiry is applied at its time, not at the next wake-up.
3. **Reconcile again** every ``resync_interval``, after any error, when the generation
   goes backwards (Redis restarted or failed over) and when the stream was trimmed past
   the resolver's position. A reconcile that finds nothing different changes nothing.

Nothing here stops the answers: the work is done in slices of a few milliseconds, and
between slices the server answers from the entries as they are — each entry is whole.
If Redis is unreachable, nothing changes and the last picture keeps answering: its sync
time does not move, so its leases do not expire behind its back.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable

import structlog

from registry.aio import sleep_or_stop
from registry.decisions import Decision, drain_subject, newer, policy_subject
from registry.errors import StoreError
from registry.grants import Grants
from registry.store import Change, Leases, Store, parse_drain, parse_policy
from resolver.outages import ControlPlane
from resolver.snapshot import Snapshot
from resolver.state import State

log = structlog.get_logger("resolver.sync")

SLICE_S = 0.002
"""How long one slice of work may hold the event loop before it yields to the answers."""


class Follower:
    def __init__(
        self,
        store: Store,
        *,
        lease_ttl_ms: int,
        publish: Callable[[Snapshot], None],
        invalidate: Callable[[Iterable[str]], None],
        block_ms: int = 1000,
        resync_interval_s: float = 30.0,
        forget_after_ms: int = 3_600_000,
        observe_propagation: Callable[[float], None] | None = None,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        expect_clusters: bool = True,
        mass_expiry_fraction: float = 0.5,
        grants: Grants | None = None,
    ) -> None:
        self.store = store
        self.state = State(lease_ttl_ms=lease_ttl_ms, grants=grants)
        self.publish = publish
        self.invalidate = invalidate
        self.block_ms = block_ms
        self.resync_interval_s = resync_interval_s
        self.forget_after_ms = forget_after_ms
        self.observe_propagation = observe_propagation
        self.wall_ms = wall_ms
        self.generation = 0
        self.stream_id = "0-0"
        self.errors = 0
        self.last_sync_monotonic = 0.0
        self.syncs = 0
        self.reconciles = 0
        self.published = False
        self.expect_clusters = expect_clusters
        """Publish (and so turn ready) only once Redis holds some cluster: an empty
        registry after a Redis restart is ignorance, not an answer. False when the
        topology names no cluster (empty by design)."""
        self.control = ControlPlane(lease_ttl_ms=lease_ttl_ms, mass_fraction=mass_expiry_fraction)
        self.outage_events: Counter[tuple[str, str]] = Counter()
        self.decisions: dict[str, Decision] = {}
        """The operator decisions applied, by subject (with their revisions)."""
        self._redis_offset_ms = 0
        """Redis time minus local monotonic time, to wait for a lease's expiry."""

    @property
    def snapshot(self) -> Snapshot:
        return self.state.snapshot

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.1
        while not stop.is_set():
            try:
                await self.reconcile()
                backoff = 0.1
                await self._follow(stop)
            except StoreError as exc:
                self.errors += 1
                self.control.unreachable(self.state.snapshot.sync_ms)
                log.warning(
                    "registry unreachable; answering from the last snapshot", error=str(exc)
                )
                delay = backoff * (0.5 + random.random())
                backoff = min(backoff * 2, 5.0)
                await sleep_or_stop(stop, delay)

    # -- reconcile ----------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Bring the state in line with the registry, reading only what differs."""
        if self.published:
            await self._reconcile()
            return
        # The first load allocates an object or two per endpoint; the cyclic collector
        # would walk the growing heap again and again meanwhile. Afterwards the loaded
        # picture is frozen out of its reach, so a later collection never walks 300,000
        # long-lived objects while queries wait.
        gc.disable()
        try:
            await self._reconcile()
        finally:
            gc.enable()
            gc.freeze()

    async def _reconcile(self) -> None:
        start = await self.store.last_change()
        generation, metas = await self.store.metas()
        decisions = await self.store.decisions()
        state = self.state
        for name, meta in metas.items():
            state.put_cluster(
                name, region=meta.region, seq=meta.seq, last_seen_ms=meta.last_seen_ms
            )
        # Judge leases before reading records, so each entry is built once, not twice.
        self._judge(await self.store.leases())
        for name, meta in metas.items():
            if meta.total and meta.total == state.total(name):
                continue  # the same records: nothing to read (the common resync)
            await self._reconcile_cluster(name)
        leases = await self.store.leases()
        missing = sorted(set(state.snapshot.clusters) - set(metas))
        for name in missing:
            if leases.now_ms - state.snapshot.clusters[name].last_seen_ms > self.forget_after_ms:
                state.drop_cluster(name)
        carried = [n for n in missing if n in state.snapshot.clusters]
        if carried:
            log.warning(
                "clusters missing from the registry kept until their leases expire",
                clusters=carried,
            )
        lost = [s for s in self.decisions if s not in decisions]
        if lost:
            log.warning(
                "operator decisions missing from Redis kept until the registry restores them",
                decisions=sorted(lost),
            )
        for decision in decisions.values():
            self._decide(decision)
        self.stream_id = start
        self.generation = max(generation, leases.generation)
        self.reconciles += 1
        await self._settle(leases)

    async def _reconcile_cluster(self, name: str) -> None:
        digests = await self.store.digests(name)
        held = self.state.records.get(name, {})
        stale = [k for k, d in digests.items() if (r := held.get(k)) is None or r.digest != d]
        gone = [k for k in held if k not in digests]
        if gone:
            self.state.put_records(name, dict.fromkeys(gone))
        await self._read(name, stale)

    async def _read(self, cluster: str, wanted: list[str]) -> None:
        async for page in self.store.records(cluster, wanted):
            self.state.put_records(cluster, page)
            if self.published:  # before the first load is whole, build each entry once
                await self._rebuild()

    # -- follow -------------------------------------------------------------------------

    async def _follow(self, stop: asyncio.Event) -> None:
        deadline = time.monotonic() + self.resync_interval_s
        while not stop.is_set() and time.monotonic() < deadline:
            oldest, changes = await self.store.changes(self.stream_id, block_ms=self._block_ms())
            if self.stream_id != "0-0" and _id(oldest) > _id(self.stream_id):
                log.warning("the change stream was trimmed past this resolver; reconciling")
                return
            observed: list[int] = []
            for change in changes:
                self.stream_id = change.id
                await self._apply(change)
                if change.observed_ms is not None:
                    observed.append(change.observed_ms)
            # The clusters are known: a new one arrives as a stream entry (read in _apply),
            # so the leases take one round trip.
            leases = await self.store.leases(self.state.snapshot.clusters)
            if leases.generation < self.generation:
                log.warning(
                    "registry generation went backwards; reconciling",
                    had=self.generation,
                    now=leases.generation,
                )
                return
            for name, seen in leases.last_seen_ms.items():
                info = self.state.snapshot.clusters.get(name)
                if info is not None and info.last_seen_ms != seen:
                    self.state.put_cluster(
                        name, region=info.region, seq=info.seq, last_seen_ms=seen
                    )
            self.generation = max(self.generation, leases.generation)
            await self._settle(leases)
            if self.observe_propagation is not None:
                now = self.wall_ms()
                for at in observed:
                    self.observe_propagation(max(0.0, (now - at) / 1000))

    async def _apply(self, change: Change) -> None:
        state = self.state
        if change.kind in ("services", "cluster"):
            info = state.snapshot.clusters.get(change.cluster)
            if info is None or info.region == "unknown":
                meta = await self.store.meta(change.cluster)
                if meta is not None:
                    state.put_cluster(
                        change.cluster,
                        region=meta.region,
                        seq=meta.seq,
                        last_seen_ms=meta.last_seen_ms,
                    )
            if change.kind == "services":
                await self._read(change.cluster, list(change.keys))
            else:
                await self._reconcile_cluster(change.cluster)
        elif change.kind in ("drain", "undrain"):
            self._decide(await self.store.decision(drain_subject(change.cluster)))
        elif change.kind == "policy":
            for key in change.keys:
                self._decide(await self.store.decision(policy_subject(key)))
        # Unknown kinds (a newer registry) are skipped; the periodic reconcile covers them.

    def _decide(self, decision: Decision) -> None:
        """Apply an operator decision unless this resolver holds a newer one: a Redis
        that lost a drain (restarted empty, failed over to a replica that missed it)
        does not undo it here before the registry writes it back."""
        if decision.rev == 0 and decision.value is None:
            return  # Redis holds nothing for it: keep what is held
        if not newer(decision, self.decisions.get(decision.subject)):
            return
        self.decisions[decision.subject] = decision
        if decision.kind == "drain":
            self.state.set_drain(decision.target, parse_drain(decision.value))
        else:
            self.state.set_policy(decision.target, parse_policy(decision.value))

    def _judge(self, leases: Leases) -> None:
        """Judge leases at ``leases.now_ms``, forgiving control-plane outages."""
        last_seen = {n: c.last_seen_ms for n, c in self.state.snapshot.clusters.items()}
        for change in self.control.observe(leases.now_ms, last_seen, leases.registry_alive_ms):
            outage = change.outage
            self.outage_events[(outage.cause, change.event)] += 1
            if change.event == "began":
                log.warning(
                    "control-plane outage: leases held, answering from the last picture",
                    cause=outage.cause,
                    since_ms=outage.start_ms,
                )
            else:
                log.warning(
                    "control-plane outage over: every lease held runs a full TTL from now",
                    cause=outage.cause,
                    lasted_s=round(((outage.end_ms or 0) - outage.start_ms) / 1000, 3),
                )
        self.state.set_outages(self.control.outages)
        self.state.advance(leases.now_ms)

    def _block_ms(self) -> int:
        """Wake up in time for the next lease expiry or spill hold, else after block_ms."""
        due = self.state.next_expiry_ms()
        if due is None:
            return self.block_ms
        now_redis = time.monotonic() * 1000 + self._redis_offset_ms
        return int(max(1, min(self.block_ms, due - now_redis)))

    # -- applying -----------------------------------------------------------------------

    async def _settle(self, leases: Leases) -> None:
        """Judge leases, rebuild what is dirty, and publish once the load is real."""
        now_ms, generation = leases.now_ms, leases.generation
        self._redis_offset_ms = now_ms - int(time.monotonic() * 1000)
        self._judge(leases)
        if self.state.snapshot.generation != generation:
            self.state.snapshot.generation = generation
            self.invalidate(("",))  # the apex: its SOA serial is the generation
        await self._rebuild()
        self.last_sync_monotonic = time.monotonic()
        self.syncs += 1
        if not self.published and (self.state.snapshot.clusters or not self.expect_clusters):
            self.published = True
            self.publish(self.state.snapshot)

    async def _rebuild(self) -> None:
        """Build the dirty entries again, yielding to the answers every few milliseconds."""
        dirty = self.state.take_dirty()
        i = 0
        while i < len(dirty):
            started = time.perf_counter()
            changed: set[str] = set()
            while i < len(dirty) and time.perf_counter() - started < SLICE_S:
                changed |= self.state.rebuild(dirty[i : i + 16])
                i += 16
            if changed and self.published:
                self.invalidate(changed)
            await asyncio.sleep(0)


def _id(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0
