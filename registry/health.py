"""Whether an endpoint may be given out, and why not: pure rules over plain data.

An endpoint is healthy when Kubernetes says it is ready (``None`` reads as ready, as the
EndpointSlice API asks of consumers), its active probe (if any) passes, the lease of the
cluster that owns it is fresh, and its cluster is not drained.

Lease freshness is judged against a ``now`` that the caller chooses. The registry API
passes the Redis server's clock; the resolver passes the Redis time of its *last
successful sync*, so that a resolver cut off from Redis keeps its last picture instead
of watching every lease expire.

A lease also does not run out for a time the control plane could not take heartbeats
(an :class:`Outage`: Redis unreachable, the registry silent, or most clusters going
stale at once): a lease that was fresh when the outage began is held while it lasts and
runs a whole TTL from its end, as Kubernetes' node lifecycle controller gives every node
a fresh grace period after its own outage instead of evicting the world.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from registry.model import Drain, Policy
from registry.records import EndpointRecord


@dataclass(frozen=True, slots=True)
class Verdict:
    healthy: bool
    reasons: tuple[str, ...] = ()
    standby: bool = False
    """Serving and terminating, and nothing else wrong: given out only when no endpoint
    of the service is healthy anywhere (as kube-proxy does)."""


HELD_MS = 1 << 62
"""The effective last-seen time of a lease held by an outage still going on."""


@dataclass(frozen=True, slots=True)
class Outage:
    """A time the control plane could not take heartbeats (ms, Redis clock)."""

    start_ms: int
    end_ms: int | None
    """None: still going on."""
    cause: str


def effective_last_seen(last_seen_ms: int, lease_ttl_ms: int, outages: Iterable[Outage]) -> int:
    """The heartbeat time a lease is judged by, once the control plane's outages (in order
    of their start) are forgiven: a lease fresh when one began is held while it lasts
    (:data:`HELD_MS`) and counts as renewed at its end."""
    if last_seen_ms <= 0:
        return last_seen_ms
    for outage in outages:
        if last_seen_ms + lease_ttl_ms < outage.start_ms:
            continue  # already stale when the control plane failed: its own fault
        if outage.end_ms is None:
            return HELD_MS
        last_seen_ms = max(last_seen_ms, outage.end_ms)
    return last_seen_ms


def lease_age_ms(last_seen_ms: int, now_ms: int) -> int:
    return max(0, now_ms - last_seen_ms)


def lease_fresh(last_seen_ms: int, now_ms: int, lease_ttl_ms: int) -> bool:
    return last_seen_ms > 0 and lease_age_ms(last_seen_ms, now_ms) <= lease_ttl_ms


def cluster_reasons(
    *, last_seen_ms: int, now_ms: int, lease_ttl_ms: int, drain: Drain | None
) -> tuple[str, ...]:
    """Why every endpoint of a cluster is out of the answers (empty: nothing wrong)."""
    reasons: list[str] = []
    if not lease_fresh(last_seen_ms, now_ms, lease_ttl_ms):
        if last_seen_ms <= 0:
            reasons.append("cluster lease: never seen")
        else:
            # Not the age: the reason must not change while nothing changes, or every
            # answer that mentions it would have to be rebuilt as time passes.
            reasons.append(f"cluster lease stale: no heartbeat for over {lease_ttl_ms / 1000:g}s")
    if drain is not None:
        reasons.append(f"cluster drained: {drain.reason}" if drain.reason else "cluster drained")
    return tuple(reasons)


_NOT_READY = ("not ready",)


def endpoint_reasons(endpoint: EndpointRecord) -> tuple[str, ...]:
    """Why this endpoint itself is out of the answers (empty: nothing wrong)."""
    if endpoint.probe_healthy is not False:
        return _NOT_READY if endpoint.ready is False else ()
    detail = f": {endpoint.probe_detail}" if endpoint.probe_detail else ""
    probe = f"probe failing{detail}"
    return ("not ready", probe) if endpoint.ready is False else (probe,)


HEALTHY = Verdict(True)


def verdict(endpoint: EndpointRecord, cluster_problems: tuple[str, ...] = ()) -> Verdict:
    """The one judge of an endpoint, used by the resolver, the API views and drains."""
    own = endpoint_reasons(endpoint)
    if not own and not cluster_problems:
        return HEALTHY
    reasons = cluster_problems + own if cluster_problems else own
    standby = (
        reasons == _NOT_READY and endpoint.serving is not False and endpoint.terminating is True
    )
    return Verdict(False, reasons, standby)


Groups = Mapping[str, tuple[int, int]]
"""``region:<r>`` / ``cluster:<c>`` → (healthy endpoints, all endpoints) of one service."""


def spill(
    groups: Groups,
    policy: Policy,
    *,
    now_ms: int,
    spilled_before: frozenset[str] = frozenset(),
    since_before: Mapping[str, int] | None = None,
) -> tuple[frozenset[str], dict[str, int]]:
    """Capacity-aware spillover: the groups held out of a service's answers, and since
    when each held-out group has had enough capacity again (the hysteresis clock).

    A group below the policy's minimum is spilled; one that was spilled comes back only
    after ``spill_hold_s`` with enough capacity. Callers without a history (the API's
    views) pass none and see the groups below the minimum now.
    """
    if not policy.capacity_aware:
        return frozenset(), {}
    spilled: set[str] = set()
    since: dict[str, int] = {}
    hold_ms = int(policy.spill_hold_s * 1000)
    for group, (healthy, total) in groups.items():
        enough = healthy >= policy.min_healthy and healthy >= policy.min_healthy_fraction * total
        if not enough:
            spilled.add(group)
        elif group in spilled_before:
            start = (since_before or {}).get(group, now_ms)
            if now_ms - start < hold_ms:
                spilled.add(group)
                since[group] = start
    return frozenset(spilled), since


def serving_clusters(members: list[tuple[str, str, Verdict]], spilled: frozenset[str]) -> set[str]:
    """The clusters whose endpoints a service's answers can draw on now.

    ``members`` are (cluster, region, verdict) per endpoint. Healthy endpoints outside a
    spilled group count; when none is healthy anywhere, the standby ones do.
    """
    healthy = {c for c, _r, v in members if v.healthy}
    if not healthy:
        return {c for c, _r, v in members if v.standby}
    kept = {
        c
        for c, r, v in members
        if v.healthy and f"cluster:{c}" not in spilled and f"region:{r}" not in spilled
    }
    return kept or healthy


def groups_of(members: list[tuple[str, str, Verdict]]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for cluster, region, v in members:
        for group in (f"region:{region}", f"cluster:{cluster}"):
            healthy, total = out.get(group, (0, 0))
            out[group] = (healthy + v.healthy, total + 1)
    return out
