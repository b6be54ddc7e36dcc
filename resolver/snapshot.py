"""The resolver's read model: what every answer is decided from, judged ahead of queries.

A :class:`Snapshot` holds one :class:`ServiceEntry` per service, built from what every
cluster reports for it, the operators' policy overrides and the Redis time of the last
successful sync. Health is decided when an entry is built, not per query.

Entries are immutable; the snapshot's mapping of them is not. :mod:`resolver.state`
replaces exactly the entries a change touches (and the responder drops exactly their
pre-packed answers), so a change costs what it touches, never the whole registry. All of
this happens on the event loop's thread between queries, so a query never sees an entry
half-built.

Two things carry over from one entry to the next, because an answer must not depend
on when the resolver happened to start:

* ``last_good`` — per address family, the endpoints last known healthy, for the
  ``last_known_good`` answer when nothing is healthy any more;
* spillover state — a region (or cluster) that fell below a capacity-aware policy's
  minimum stays out of the answers until it has had enough capacity for
  ``spill_hold_s`` (hysteresis, so a flapping endpoint does not flap the answer).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from registry import health
from registry.model import Drain, Policy, PolicyOverride, Port
from registry.policies import DEFAULT_POLICY, effective_policy
from registry.records import ServiceRecord


@dataclass(slots=True)
class Candidate:
    """One endpoint as the resolver sees it: where it is and whether it may be given.

    Never changed once built (not declared frozen: see :class:`registry.records.EndpointRecord`)."""

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
    """One service as every query about it is answered.

    Besides what decisions read, an entry holds what a query must look up without
    walking every endpoint — whether a cluster reports the service, which SRV names
    exist, which clusters have healthy endpoints, and the candidate an address names —
    so no query costs more than a dictionary probe, however many endpoints and ports a
    report holds. The first three are computed with the entry; the address index on
    first use (SRV answers and their targets only).
    """

    namespace: str
    name: str
    ttl: int | None
    """The TTL the clusters' records set (the lowest); None: the resolver's GLOBALDNS_TTL."""
    candidates: tuple[Candidate, ...]
    policy: Policy = DEFAULT_POLICY
    policy_source: str = "default"
    policy_conflict: tuple[str, ...] = ()
    """Granted clusters whose annotation differs from the first's (registry.policies)."""
    spilled: frozenset[str] = frozenset()
    """Groups (``region:<r>``, ``cluster:<c>``) held out for lack of capacity."""
    spill_since: Mapping[str, int] = field(default_factory=dict)
    """Spilled groups with enough capacity again, since when (ms, Redis clock)."""
    last_good: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    """Per address family, the endpoints last known healthy."""
    clusters: frozenset[str] = field(init=False, compare=False, repr=False)
    """The clusters with endpoints of this service (its pinned names)."""
    srv_names: frozenset[tuple[str, str]] = field(init=False, compare=False, repr=False)
    """(port name, protocol) of every port of any endpoint: the SRV names that exist."""
    healthy_clusters: Mapping[int, tuple[str, ...]] = field(init=False, compare=False, repr=False)
    """Per address family, the clusters with a healthy endpoint, sorted (weighted picks)."""
    _by_address: dict[str, Candidate] = field(
        init=False, compare=False, repr=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        clusters: set[str] = set()
        healthy: dict[int, set[str]] = {}
        port_lists: dict[int, tuple[Port, ...]] = {}
        for c in self.candidates:
            clusters.add(c.cluster)
            # Port tuples are shared between endpoints (registry.records): one look each.
            port_lists[id(c.ports)] = c.ports
            if c.healthy:
                healthy.setdefault(c.family, set()).add(c.cluster)
        names = {(p.name, p.protocol) for ports in port_lists.values() for p in ports}
        object.__setattr__(self, "clusters", frozenset(clusters))
        object.__setattr__(self, "srv_names", frozenset(names))
        object.__setattr__(
            self, "healthy_clusters", {f: tuple(sorted(cs)) for f, cs in healthy.items()}
        )

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def candidate(self, address: str) -> Candidate | None:
        """The first candidate with this address (its ports are its cluster's)."""
        index = self._by_address
        if not index and self.candidates:
            for c in self.candidates:
                index.setdefault(c.address, c)
        return index.get(address)

    def spill_due_ms(self) -> int | None:
        """When a held-back group's hold runs out (the entry must be judged again)."""
        if not self.spill_since:
            return None
        return min(self.spill_since.values()) + int(self.policy.spill_hold_s * 1000)


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    """What the resolver knows of a cluster besides its records."""

    name: str
    region: str
    seq: int = 0
    last_seen_ms: int = 0
    drain: Drain | None = None


@dataclass(slots=True)
class Snapshot:
    generation: int
    sync_ms: int
    clusters: dict[str, ClusterInfo] = field(default_factory=dict)
    services: dict[str, ServiceEntry] = field(default_factory=dict)
    """By DNS owner name relative to the zone: ``<service>.<namespace>``."""
    namespaces: Counter[str] = field(default_factory=Counter)
    """Services per namespace (a namespace is an empty non-terminal while it has any)."""
    live: frozenset[str] = frozenset()
    """Clusters whose lease was fresh at ``sync_ms``."""
    policies: dict[str, PolicyOverride] = field(default_factory=dict)
    unhealthy: set[str] = field(default_factory=set)
    """Owners with no healthy endpoint anywhere (kept as entries change, for metrics)."""

    @property
    def loaded(self) -> bool:
        return self.sync_ms > 0


def empty() -> Snapshot:
    return Snapshot(generation=0, sync_ms=0)


Reported = Sequence[tuple[ClusterInfo, ServiceRecord, tuple[str, ...]]]
"""One service as each cluster reports it, with that cluster's problems (lease, drain)."""


def entry(
    reported: Reported,
    *,
    policies: Mapping[str, PolicyOverride],
    sync_ms: int,
    previous: ServiceEntry | None = None,
    may_set_policy: Callable[[str], bool] = lambda _cluster: True,
) -> ServiceEntry:
    """One service's entry, from every cluster's record of it (clusters sorted by name);
    the annotations of clusters that may not set policy (``may_set_policy``) are ignored."""
    candidates: list[Candidate] = []
    verdict, healthy = health.verdict, health.HEALTHY
    for cluster, record, problems in reported:
        name, region, service_ports = cluster.name, cluster.region, record.ports
        for endpoint in record.endpoints:
            if problems or endpoint.ready is False or endpoint.probe_healthy is False:
                judged = verdict(endpoint, problems)
            else:
                judged = healthy  # the common case, without a call
            candidates.append(
                Candidate(
                    endpoint.address,
                    endpoint.family,
                    name,
                    region,
                    judged.healthy,
                    judged.reasons,
                    service_ports if endpoint.ports is None else endpoint.ports,
                    judged.standby,
                )
            )
    first = reported[0][1]
    policy, source, conflict = effective_policy(
        first.key,
        [(c.name, r.policy if may_set_policy(c.name) else None) for c, r, _p in reported],
        policies,
    )
    spilled: frozenset[str] = frozenset()
    since: dict[str, int] = {}
    if policy.capacity_aware:
        members = [
            (c.cluster, c.region, health.Verdict(c.healthy, c.reasons, c.standby))
            for c in candidates
        ]
        spilled, since = health.spill(
            health.groups_of(members),
            policy,
            now_ms=sync_ms,
            spilled_before=previous.spilled if previous is not None else frozenset(),
            since_before=previous.spill_since if previous is not None else None,
        )
    last_good = dict(previous.last_good) if previous is not None else {}
    good: dict[int, dict[str, None]] = {}
    for c in candidates:
        if c.healthy:
            good.setdefault(c.family, {})[c.address] = None
    for family, addresses in good.items():
        last_good[family] = tuple(addresses)
    ttls = [r.ttl for _c, r, _p in reported if r.ttl is not None]
    return ServiceEntry(
        namespace=first.namespace,
        name=first.name,
        ttl=min(ttls) if ttls else None,
        candidates=tuple(candidates),
        policy=policy,
        policy_source=source,
        policy_conflict=conflict,
        spilled=spilled,
        spill_since=since,
        last_good=last_good,
    )
