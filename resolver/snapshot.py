"""The resolver's read model: an immutable picture of the registry, judged once.

A :class:`Snapshot` is built from the clusters the registry holds and the Redis time of
the last successful sync. Health is decided here, once per snapshot, not per query. The
snapshot is never changed after it is built: the sync task builds a new one and the
server swaps it in whole.

Clusters that a full reload no longer finds (Redis restarted empty, or failed over and
lost the tail) are *carried over* from the previous snapshot with their old lease: their
agents will report again within a heartbeat, and if they do not, the lease expires and
they leave the answers the ordinary way. A restarted Redis is not a dead world.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from registry import health
from registry.model import ClusterState

DEFAULT_TTL = 5


@dataclass(frozen=True, slots=True)
class Candidate:
    """One endpoint as the resolver sees it: where it is and whether it may be given."""

    address: str
    family: int
    cluster: str
    region: str
    healthy: bool
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    namespace: str
    name: str
    ttl: int
    candidates: tuple[Candidate, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    generation: int
    sync_ms: int
    clusters: Mapping[str, ClusterState]
    services: Mapping[str, ServiceEntry]
    """By DNS owner name relative to the zone: ``<service>.<namespace>``."""
    namespaces: frozenset[str] = field(default_factory=frozenset)
    live: frozenset[str] = field(default_factory=frozenset)
    """Clusters whose lease was fresh at ``sync_ms``."""

    @property
    def loaded(self) -> bool:
        return self.sync_ms > 0


EMPTY = Snapshot(generation=0, sync_ms=0, clusters={}, services={})


def build(
    clusters: Iterable[ClusterState], *, generation: int, sync_ms: int, lease_ttl_ms: int
) -> Snapshot:
    by_name = {c.name: c for c in clusters}
    grouped: dict[str, list[Candidate]] = {}
    ttls: dict[str, int] = {}
    names: dict[str, tuple[str, str]] = {}
    live = set()
    for cluster in sorted(by_name.values(), key=lambda c: c.name):
        problems = health.cluster_reasons(
            last_seen_ms=cluster.last_seen_ms,
            now_ms=sync_ms,
            lease_ttl_ms=lease_ttl_ms,
            drain=cluster.drain,
        )
        if health.lease_fresh(cluster.last_seen_ms, sync_ms, lease_ttl_ms):
            live.add(cluster.name)
        for service in cluster.services:
            owner = f"{service.name}.{service.namespace}"
            names[owner] = (service.namespace, service.name)
            if service.ttl is not None:
                ttls[owner] = min(ttls.get(owner, service.ttl), service.ttl)
            bucket = grouped.setdefault(owner, [])
            for endpoint in service.endpoints:
                verdict = health.verdict(endpoint, problems)
                bucket.append(
                    Candidate(
                        address=endpoint.address,
                        family=endpoint.family,
                        cluster=cluster.name,
                        region=cluster.region,
                        healthy=verdict.healthy,
                        reasons=verdict.reasons,
                    )
                )
    services = {
        owner: ServiceEntry(
            namespace=names[owner][0],
            name=names[owner][1],
            ttl=ttls.get(owner, DEFAULT_TTL),
            candidates=tuple(candidates),
        )
        for owner, candidates in grouped.items()
    }
    return Snapshot(
        generation=generation,
        sync_ms=sync_ms,
        clusters=by_name,
        services=services,
        namespaces=frozenset(ns for ns, _ in names.values()),
        live=frozenset(live),
    )


def carry_over(
    previous: Mapping[str, ClusterState],
    loaded: Iterable[ClusterState],
    *,
    sync_ms: int,
    forget_after_ms: int,
) -> list[ClusterState]:
    """The clusters of a full reload, plus earlier ones it lacks, until long expired."""
    clusters = {c.name: c for c in loaded}
    for name, old in previous.items():
        if name not in clusters and sync_ms - old.last_seen_ms <= forget_after_ms:
            clusters[name] = old
    return list(clusters.values())
