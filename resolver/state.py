"""The registry as the resolver holds it, and the snapshot built from it, kept in step.

:class:`State` is pure: the sync task (:mod:`resolver.sync`) reads Redis and feeds it
changes — one cluster's records, a lease renewal, a drain, a policy override, the sync
clock moving on — and each change marks *dirty* only the services it can affect:

==========================  =================================================
change                      services judged again
==========================  =================================================
records of a cluster        the services upserted or removed
lease renewed               none (a heartbeat changes no answer)
lease expired / came back   the services with endpoints in that cluster
drain set / cleared         the services with endpoints in that cluster
policy override             that service
spill hold ran out          that service
==========================  =================================================

:meth:`State.rebuild` then builds the dirty entries again and reports which owners'
answers really changed, so the responder drops only their pre-packed answers. The
property test (``tests/resolver/test_incremental.py``) checks that any sequence of
changes applied this way gives the entries a full rebuild from the final state gives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from registry import health
from registry.grants import Grants
from registry.model import ClusterState, Drain, PolicyOverride
from registry.records import ServiceRecord, compact
from resolver import snapshot as snapshots
from resolver.snapshot import ClusterInfo, Snapshot


def owner_of(key: str) -> str:
    """``<namespace>/<name>`` → the DNS owner ``<name>.<namespace>``."""
    namespace, _, name = key.partition("/")
    return f"{name}.{namespace}"


class State:
    def __init__(self, *, lease_ttl_ms: int, grants: Grants | None = None) -> None:
        self.lease_ttl_ms = lease_ttl_ms
        self.grants = grants
        """What each cluster may export and annotate (None: everything, for tools that
        build a snapshot from data already judged)."""
        self.not_granted: set[tuple[str, str]] = set()
        """(cluster, ``<namespace>/<name>``) records held but not answered: not granted."""
        self.conflicts: set[str] = set()
        """Services whose granted clusters annotate different policies."""
        self.snapshot = snapshots.empty()
        self.records: dict[str, dict[str, ServiceRecord]] = {}
        """cluster → ``<namespace>/<name>`` → its record."""
        self.holders: dict[str, set[str]] = {}
        """``<namespace>/<name>`` → the clusters that report it."""
        self.problems: dict[str, tuple[str, ...]] = {}
        """cluster → why its endpoints are out (lease, drain), as of the sync time."""
        self.totals: dict[str, int] = {}
        """cluster → XOR of its records' digests (as the registry keeps it, to resync cheaply)."""
        self.dirty: set[str] = set()
        self.spill_due: dict[str, int] = {}
        """``<namespace>/<name>`` → when its spill hold runs out (ms, Redis clock)."""
        self.drains: dict[str, Drain] = {}
        """cluster → its drain, also for clusters not (yet) reporting."""
        self.outages: tuple[health.Outage, ...] = ()
        """Control-plane outages leases are forgiven for (:mod:`resolver.outages`)."""

    # -- changes ------------------------------------------------------------------------

    def put_cluster(self, name: str, *, region: str, seq: int, last_seen_ms: int) -> None:
        """A cluster's lease and region (a heartbeat, or what a reload found)."""
        clusters = self.snapshot.clusters
        old = clusters.get(name)
        clusters[name] = ClusterInfo(name, region, seq, last_seen_ms, self.drains.get(name))
        if old is None or old.region != region:
            self.dirty |= self.records.get(name, {}).keys()
        self._judge_cluster(name)

    def put_records(self, cluster: str, changes: Mapping[str, ServiceRecord | None]) -> None:
        """Upsert (a record) or remove (None) some of ``cluster``'s services."""
        held = self.records.setdefault(cluster, {})
        total = self.totals.get(cluster, 0)
        for key, record in changes.items():
            old = held.get(key)
            if old is not None:
                total ^= int(old.digest or "0", 16)
            if record is not None:
                total ^= int(record.digest or "0", 16)
            if record is None:
                if held.pop(key, None) is None:
                    continue
                self.not_granted.discard((cluster, key))
                holders = self.holders.get(key)
                if holders is not None:
                    holders.discard(cluster)
                    if not holders:
                        del self.holders[key]
            else:
                if held.get(key) == record:
                    continue
                held[key] = record
                self.holders.setdefault(key, set()).add(cluster)
            self.dirty.add(key)
        self.totals[cluster] = total
        if cluster not in self.snapshot.clusters:
            self.snapshot.clusters[cluster] = ClusterInfo(
                cluster, "unknown", drain=self.drains.get(cluster)
            )
            self._judge_cluster(cluster)

    def drop_cluster(self, name: str) -> None:
        """Forget a cluster entirely (gone from the registry long ago)."""
        self.put_records(name, dict.fromkeys(self.records.get(name, {})))
        self.records.pop(name, None)
        self.totals.pop(name, None)
        self.snapshot.clusters.pop(name, None)
        self.snapshot.live -= {name}
        self.problems.pop(name, None)

    def set_drain(self, cluster: str, drain: Drain | None) -> None:
        if drain is None:
            self.drains.pop(cluster, None)
        else:
            self.drains[cluster] = drain
        info = self.snapshot.clusters.get(cluster)
        if info is None or info.drain == drain:
            return  # applied when the cluster reports
        self.snapshot.clusters[cluster] = ClusterInfo(
            info.name, info.region, info.seq, info.last_seen_ms, drain
        )
        self._judge_cluster(cluster)

    def set_policy(self, key: str, override: PolicyOverride | None) -> None:
        policies = self.snapshot.policies
        if policies.get(key) == override:
            return
        if override is None:
            del policies[key]
        else:
            policies[key] = override
        if key in self.holders:
            self.dirty.add(key)

    def set_outages(self, outages: tuple[health.Outage, ...]) -> None:
        """The control-plane outages to forgive (judged at the next :meth:`advance`)."""
        self.outages = outages

    def advance(self, sync_ms: int) -> None:
        """The sync clock moved on: leases and spill holds are judged at ``sync_ms``."""
        self.snapshot.sync_ms = sync_ms
        for name in self.snapshot.clusters:
            self._judge_cluster(name)
        due = [key for key, at in self.spill_due.items() if at <= sync_ms]
        for key in due:
            del self.spill_due[key]
            self.dirty.add(key)

    def _judge_cluster(self, name: str) -> None:
        info = self.snapshot.clusters[name]
        seen = self._last_seen(info)
        fresh = health.lease_fresh(seen, self.snapshot.sync_ms, self.lease_ttl_ms)
        if fresh != (name in self.snapshot.live):
            live = self.snapshot.live
            self.snapshot.live = live | {name} if fresh else live - {name}
        problems = health.cluster_reasons(
            last_seen_ms=seen,
            now_ms=self.snapshot.sync_ms,
            lease_ttl_ms=self.lease_ttl_ms,
            drain=info.drain,
        )
        if self.problems.get(name) != problems:
            self.problems[name] = problems
            self.dirty |= self.records.get(name, {}).keys()

    def _last_seen(self, info: ClusterInfo) -> int:
        if not self.outages:
            return info.last_seen_ms
        return health.effective_last_seen(info.last_seen_ms, self.lease_ttl_ms, self.outages)

    # -- rebuilding ---------------------------------------------------------------------

    def total(self, cluster: str) -> str:
        """This state's :func:`registry.store.combined` digest of ``cluster``'s records."""
        return format(self.totals.get(cluster, 0), "x")

    def take_dirty(self) -> list[str]:
        dirty, self.dirty = sorted(self.dirty), set()
        return dirty

    def rebuild(self, keys: Iterable[str]) -> set[str]:
        """Build these services' entries again; returns the owners whose entry changed."""
        changed: set[str] = set()
        services = self.snapshot.services
        for key in keys:
            owner = owner_of(key)
            before = services.get(owner)
            holders = self._granted(key, self.holders.get(key))
            if not holders:
                self.conflicts.discard(key)
                if before is not None:
                    del services[owner]
                    self.snapshot.unhealthy.discard(owner)
                    self._count_namespace(before.namespace, -1)
                    self.spill_due.pop(key, None)
                    changed.add(owner)
                continue
            reported = [
                (self.snapshot.clusters[c], self.records[c][key], self.problems[c])
                for c in sorted(holders)
            ]
            grants = self.grants
            after = snapshots.entry(
                reported,
                policies=self.snapshot.policies,
                sync_ms=self.snapshot.sync_ms,
                previous=before,
                may_set_policy=grants.policy_annotations if grants else lambda _c: True,
            )
            if after.policy_conflict:
                self.conflicts.add(key)
            else:
                self.conflicts.discard(key)
            due = after.spill_due_ms()
            if due is None:
                self.spill_due.pop(key, None)
            else:
                self.spill_due[key] = due
            if after == before:
                continue
            services[owner] = after
            if any(c.healthy for c in after.candidates):
                self.snapshot.unhealthy.discard(owner)
            else:
                self.snapshot.unhealthy.add(owner)
            if before is None:
                self._count_namespace(after.namespace, 1)
            changed.add(owner)
        return changed

    def _granted(self, key: str, holders: set[str] | None) -> set[str] | None:
        """The holders of ``key`` that may export it (the registry refuses the others;
        this keeps out what was stored before a grant narrowed)."""
        grants = self.grants
        if grants is None or not holders:
            return holders
        granted = set()
        for cluster in holders:
            if grants.exported(cluster, key):
                granted.add(cluster)
                self.not_granted.discard((cluster, key))
            else:
                self.not_granted.add((cluster, key))
        return granted

    def _count_namespace(self, namespace: str, delta: int) -> None:
        counts = self.snapshot.namespaces
        counts[namespace] += delta
        if counts[namespace] <= 0:
            del counts[namespace]

    def next_expiry_ms(self) -> int | None:
        """The Redis time at which the next live lease runs out, or a spill hold ends."""
        times = [
            seen + self.lease_ttl_ms + 1
            for name, info in self.snapshot.clusters.items()
            if name in self.snapshot.live and (seen := self._last_seen(info)) < health.HELD_MS
        ]
        times += self.spill_due.values()
        return min(times) if times else None


def build(
    clusters: Iterable[ClusterState],
    *,
    generation: int,
    sync_ms: int,
    lease_ttl_ms: int,
    policies: Mapping[str, PolicyOverride] | None = None,
    outages: tuple[health.Outage, ...] = (),
    grants: Grants | None = None,
) -> Snapshot:
    """A whole snapshot from a registry view, in one go (zone export, tests, benchmarks)."""
    state = State(lease_ttl_ms=lease_ttl_ms, grants=grants)
    state.set_outages(outages)
    for cluster in clusters:
        state.put_cluster(
            cluster.name,
            region=cluster.region,
            seq=cluster.seq,
            last_seen_ms=cluster.last_seen_ms,
        )
        state.set_drain(cluster.name, cluster.drain)
        state.put_records(cluster.name, {s.key: compact(s) for s in cluster.services})
    for key, override in (policies or {}).items():
        state.set_policy(key, override)
    state.advance(sync_ms)
    state.rebuild(state.take_dirty())
    state.snapshot.generation = generation
    return state.snapshot
