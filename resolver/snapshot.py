"""The resolver's read model: an immutable picture of the registry, judged once.

A :class:`Snapshot` is built from the clusters the registry holds, the operators' policy
overrides and the Redis time of the last successful sync. Health is decided here, once
per snapshot, not per query. The snapshot is never changed after it is built: the sync
task builds a new one and the server swaps it in whole.

Two things carry over from one snapshot to the next, because an answer must not depend
on when the resolver happened to start:

* ``last_good`` — per service and address family, the endpoints last known healthy, for
  the ``last_known_good`` answer when nothing is healthy any more;
* spillover state — a region (or cluster) that fell below a capacity-aware policy's
  minimum stays out of the answers until it has had enough capacity for
  ``spill_hold_s`` (hysteresis, so a flapping endpoint does not flap the answer).

Clusters that a full reload no longer finds (Redis restarted empty, or failed over and
lost the tail) are *carried over* from the previous snapshot with their old lease: their
agents will report again within a heartbeat, and if they do not, the lease expires and
they leave the answers the ordinary way. A restarted Redis is not a dead world.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from registry import health
from registry.model import ClusterState, Policy, PolicyOverride, Port, Service
from registry.policies import DEFAULT_POLICY, effective_policy

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
    ports: tuple[Port, ...] = ()
    """This endpoint's ports: its own (per EndpointSlice) or else the service's."""
    standby: bool = False
    """Serving and terminating, and nothing else wrong: the fallback when no endpoint
    of the service is ready anywhere (as kube-proxy does)."""


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    namespace: str
    name: str
    ttl: int
    candidates: tuple[Candidate, ...]
    policy: Policy = DEFAULT_POLICY
    policy_source: str = "default"
    spilled: frozenset[str] = frozenset()
    """Groups (``region:<r>``, ``cluster:<c>``) held out for lack of capacity."""
    spill_since: Mapping[str, int] = field(default_factory=dict)
    """Spilled groups with enough capacity again, since when (ms, Redis clock)."""
    last_good: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    """Per address family, the endpoints last known healthy."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


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
    policies: Mapping[str, PolicyOverride] = field(default_factory=dict)

    @property
    def loaded(self) -> bool:
        return self.sync_ms > 0

    def signature(self) -> tuple[object, ...]:
        """What answers depend on besides the records: liveness and spillover."""
        return (
            self.live,
            tuple(sorted((owner, e.spilled) for owner, e in self.services.items() if e.spilled)),
        )


EMPTY = Snapshot(generation=0, sync_ms=0, clusters={}, services={})


def _spill(
    entry_groups: dict[str, tuple[int, int]],
    policy: Policy,
    previous: ServiceEntry | None,
    sync_ms: int,
) -> tuple[frozenset[str], dict[str, int]]:
    if not policy.capacity_aware:
        return frozenset(), {}
    spilled: set[str] = set()
    since: dict[str, int] = {}
    hold_ms = int(policy.spill_hold_s * 1000)
    for group, (healthy, total) in entry_groups.items():
        enough = healthy >= policy.min_healthy and healthy >= policy.min_healthy_fraction * total
        was = previous is not None and group in previous.spilled
        if not enough:
            spilled.add(group)
        elif was:
            assert previous is not None
            start = previous.spill_since.get(group, sync_ms)
            if sync_ms - start < hold_ms:
                spilled.add(group)
                since[group] = start
    return frozenset(spilled), since


def build(
    clusters: Iterable[ClusterState],
    *,
    generation: int,
    sync_ms: int,
    lease_ttl_ms: int,
    policies: Mapping[str, PolicyOverride] | None = None,
    previous: Snapshot | None = None,
) -> Snapshot:
    policies = policies or {}
    by_name = {c.name: c for c in clusters}
    grouped: dict[str, list[Candidate]] = {}
    reported: dict[str, list[tuple[str, Service]]] = {}
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
            reported.setdefault(owner, []).append((cluster.name, service))
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
                        ports=endpoint.ports if endpoint.ports is not None else service.ports,
                        standby=(
                            verdict.reasons == ("not ready",)
                            and endpoint.conditions.serving is not False
                            and endpoint.conditions.terminating is True
                        ),
                    )
                )
    services = {}
    for owner, candidates in grouped.items():
        first = reported[owner][0][1]
        policy, source = effective_policy(first.key, reported[owner], policies)
        ttls = [s.ttl for _, s in reported[owner] if s.ttl is not None]
        before = previous.services.get(owner) if previous is not None else None
        groups: dict[str, tuple[int, int]] = {}
        for c in candidates:
            for group in (f"region:{c.region}", f"cluster:{c.cluster}"):
                healthy, total = groups.get(group, (0, 0))
                groups[group] = (healthy + c.healthy, total + 1)
        spilled, since = _spill(groups, policy, before, sync_ms)
        last_good = dict(before.last_good) if before is not None else {}
        for family in (4, 6):
            now_good = tuple(
                dict.fromkeys(c.address for c in candidates if c.healthy and c.family == family)
            )
            if now_good:
                last_good[family] = now_good
        services[owner] = ServiceEntry(
            namespace=first.namespace,
            name=first.name,
            ttl=min(ttls) if ttls else DEFAULT_TTL,
            candidates=tuple(candidates),
            policy=policy,
            policy_source=source,
            spilled=spilled,
            spill_since=since,
            last_good=last_good,
        )
    return Snapshot(
        generation=generation,
        sync_ms=sync_ms,
        clusters=by_name,
        services=services,
        namespaces=frozenset(e.namespace for e in services.values()),
        live=frozenset(live),
        policies=dict(policies),
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
