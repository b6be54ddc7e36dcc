"""Which endpoints a client gets: pure decisions over a snapshot's service entry.

Every policy works on the endpoints of the asked address family and returns a
:class:`Decision` that says *why* — the branch taken and a trace of every cluster and
endpoint kept or skipped — so the same function answers queries and explains them.

``geo``
    The client's own cluster first (when its network maps to one), then the nearest
    region with healthy endpoints.
``failover``
    The policy's ``order`` (clusters or regions), first with healthy endpoints wins;
    when none of them has any, the nearest healthy region.
``weighted``
    One cluster per client subnet, drawn by weighted rendezvous hashing: the share of
    subnets a cluster gets is its share of the weights, a subnet stays on its side while
    the set of healthy weighted clusters is unchanged, and weights hold even behind
    resolvers that reorder records, because they decide *which* records are returned.
``all``
    Every healthy endpoint.
``residency``
    A fence: a client located in a jurisdiction gets only endpoints in regions of that
    jurisdiction, nearest first, and NODATA when none is healthy (fails closed).

Capacity-aware spillover (``min_healthy``, ``min_healthy_fraction``) skips regions and
clusters that the snapshot marked as spilled. When nothing is healthy, the service's
``when_all_unhealthy`` decides: the endpoints last known good, all of them, or none.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from resolver.snapshot import Candidate, ServiceEntry

MAX_ANSWERS = 8
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Client:
    """What a decision may know about the client; everything else is cached away."""

    region: str | None = None
    cluster: str | None = None
    jurisdiction: str | None = None
    pick: str | None = None
    """weighted: the cluster this client's subnet hashes to (see :func:`weighted_pick`)."""


@dataclass(frozen=True, slots=True)
class Decision:
    addresses: tuple[str, ...]
    """In preference order; rotation and the answer cap are the packer's business."""
    region: str | None
    reason: str
    location_dependent: bool
    branch: str = ""
    trace: tuple[str, ...] = ()


def decide(
    entry: ServiceEntry,
    family: int,
    client: Client,
    *,
    order: Sequence[str],
    jurisdictions: Mapping[str, str | None],
) -> Decision:
    policy = entry.policy
    trace = [f"policy {policy.kind} ({entry.policy_source})"]
    of_family = [c for c in entry.candidates if c.family == family]
    if not of_family:
        return Decision(
            (), None, f"no IPv{family} endpoints registered", False, "empty", tuple(trace)
        )
    for c in of_family:
        if not c.healthy:
            trace.append(f"skip {c.address} ({c.cluster}): {'; '.join(c.reasons)}")
    if policy.kind == "residency" and client.jurisdiction is not None:
        inside = [c for c in of_family if jurisdictions.get(c.region) == client.jurisdiction]
        for c in of_family:
            if c not in inside:
                trace.append(f"fence {c.address} ({c.region}): outside {client.jurisdiction}")
        pool = [c for c in inside if c.healthy]
        if not pool:
            return Decision(
                (),
                None,
                f"residency: nothing healthy inside {client.jurisdiction}; NODATA (fails closed)",
                True,
                "fenced-empty",
                tuple(trace),
            )
        return _nearest(entry, pool, client, order, trace, "residency")
    healthy = [c for c in of_family if c.healthy]
    if not healthy:
        standby = [c for c in of_family if c.standby]
        if standby:
            trace.append("no endpoint ready anywhere: serving-and-terminating ones instead")
            return Decision(
                _addresses(standby),
                None,
                "nothing ready; endpoints still serving while they terminate",
                False,
                "serving-terminating",
                tuple(trace),
            )
        return _all_unhealthy(entry, family, of_family, trace)
    if policy.kind == "failover":
        for item in policy.order:
            group = [c for c in healthy if item in (c.cluster, c.region)]
            if not group:
                trace.append(f"failover: {item} has no healthy endpoint")
                continue
            if _spilled(entry, item, group[0]):
                trace.append(f"failover: {item} spilled (below minimum capacity)")
                continue
            region = group[0].region
            return Decision(
                _addresses(group),
                region,
                f"failover: first healthy in order: {item}",
                False,
                "failover",
                tuple(trace),
            )
        trace.append("failover: nothing in the order is healthy; nearest healthy instead")
        return _nearest(entry, healthy, client, order, trace, "failover-fallback")
    if policy.kind == "weighted":
        if client.pick is not None:
            group = [c for c in healthy if c.cluster == client.pick]
            if group:
                weight = policy.weights.get(client.pick, 0)
                total = sum(policy.weights.values())
                return Decision(
                    _addresses(group),
                    group[0].region,
                    f"weighted: client subnet hashes to {client.pick} ({weight}/{total})",
                    True,
                    "weighted",
                    tuple(trace),
                )
        trace.append("weighted: no weighted cluster healthy; nearest healthy instead")
        return _nearest(entry, healthy, client, order, trace, "weighted-fallback")
    if policy.kind == "all":
        return Decision(
            _addresses(healthy), None, "all: every healthy endpoint", False, "all", tuple(trace)
        )
    return _nearest(entry, healthy, client, order, trace, "geo")


def pinned(entry: ServiceEntry, family: int, cluster: str) -> Decision:
    """``<cluster>.<service>.<namespace>``: that cluster's healthy endpoints, or NODATA."""
    mine = [c for c in entry.candidates if c.family == family and c.cluster == cluster]
    trace = [f"pinned to cluster {cluster}"] + [
        f"skip {c.address} ({c.cluster}): {'; '.join(c.reasons)}" for c in mine if not c.healthy
    ]
    healthy = [c for c in mine if c.healthy]
    if not healthy:
        return Decision(
            (),
            None,
            f"pinned: nothing healthy in {cluster}; NODATA",
            False,
            "pinned-empty",
            tuple(trace),
        )
    return Decision(
        _addresses(healthy),
        healthy[0].region,
        f"pinned: cluster {cluster}",
        False,
        "pinned",
        tuple(trace),
    )


def _spilled(entry: ServiceEntry, item: str, sample: Candidate) -> bool:
    kind = "cluster" if item == sample.cluster else "region"
    return f"{kind}:{item}" in entry.spilled


def _nearest(
    entry: ServiceEntry,
    pool: list[Candidate],
    client: Client,
    order: Sequence[str],
    trace: list[str],
    branch: str,
) -> Decision:
    if client.cluster is not None:
        own = [c for c in pool if c.cluster == client.cluster]
        if own and f"cluster:{client.cluster}" not in entry.spilled:
            return Decision(
                _addresses(own),
                own[0].region,
                f"{branch}: the client's own cluster {client.cluster}",
                True,
                branch,
                tuple(trace),
            )
    regions = {c.region for c in pool}
    ranked = [r for r in order if r in regions] + sorted(regions - set(order))
    for position, region in enumerate(ranked):
        if f"region:{region}" in entry.spilled and position < len(ranked) - 1:
            trace.append(f"spill {region}: below minimum capacity")
            continue
        chosen = [c for c in pool if c.region == region]
        nearest = region == (order[0] if order else None)
        why = "nearest region" if nearest else "nearest region with healthy endpoints"
        return Decision(
            _addresses(chosen), region, f"{branch}: {why} {region}", True, branch, tuple(trace)
        )
    raise AssertionError("a non-empty pool has a region")


def _all_unhealthy(
    entry: ServiceEntry, family: int, of_family: list[Candidate], trace: list[str]
) -> Decision:
    choice = entry.policy.when_all_unhealthy
    if choice == "none":
        return Decision(
            (),
            None,
            "nothing healthy; NODATA (when_all_unhealthy: none)",
            False,
            "all-unhealthy-none",
            tuple(trace),
        )
    if choice == "last_known_good" and entry.last_good.get(family):
        return Decision(
            entry.last_good[family],
            None,
            "nothing healthy; the endpoints last known good",
            False,
            "all-unhealthy-last-known-good",
            tuple(trace),
        )
    return Decision(
        _addresses(of_family),
        None,
        "nothing healthy; every known endpoint (fail open)",
        False,
        "all-unhealthy-all",
        tuple(trace),
    )


def _addresses(candidates: Sequence[Candidate]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(c.address for c in candidates))


def _mix(value: int) -> int:
    """splitmix64: a fast, well-spread integer hash, the same in every process."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def weighted_pick(entry: ServiceEntry, family: int, subnet: int) -> str | None:
    """The cluster a client subnet is sent to: weighted rendezvous hashing.

    Each healthy weighted cluster scores ``-ln(u) / weight`` with ``u`` a hash of
    (subnet, cluster) in (0, 1]; the lowest score wins. A cluster wins for a share of
    subnets equal to its share of the weights, and a subnet moves only when its own
    cluster leaves or a better-scoring one joins.
    """
    weights = entry.policy.weights
    best, best_score = None, math.inf
    # Asked for every query of a weighted service: clusters only, never its endpoints.
    for cluster in entry.healthy_clusters.get(family, ()):
        weight = weights.get(cluster, 0)
        if weight <= 0:
            continue
        h = _mix(subnet ^ _mix(zlib.crc32(cluster.encode())))
        u = ((h >> 11) + 1) / float(1 << 53)
        score = -math.log(u) / weight
        if score < best_score:
            best, best_score = cluster, score
    return best


def rotation_count(n: int, *, limit: int = MAX_ANSWERS) -> int:
    """How many different answers rotation gives ``n`` addresses (see :func:`rotation`)."""
    if n <= limit:
        return max(n, 1)
    return -(-n // limit)


def rotation(addresses: Sequence[str], k: int, *, limit: int = MAX_ANSWERS) -> tuple[str, ...]:
    """The ``k``-th answer: every rotation while all addresses fit in one answer; past
    that, windows of ``limit`` addresses (wrapping round), so every address is in some
    answer and a service of 1,000 endpoints has 125 answers, not 1,000."""
    n = len(addresses)
    if n <= limit:
        return tuple(addresses[k:]) + tuple(addresses[:k])
    start = k * limit
    window = tuple(addresses[start : start + limit])
    return window + tuple(addresses[: limit - len(window)])


def rotations(addresses: Sequence[str], *, limit: int = MAX_ANSWERS) -> list[tuple[str, ...]]:
    """Every answer :func:`rotation` gives, each cut to ``limit`` records."""
    return [
        rotation(addresses, k, limit=limit)
        for k in range(rotation_count(len(addresses), limit=limit))
    ]
