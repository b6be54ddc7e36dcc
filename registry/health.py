"""Whether an endpoint may be given out, and why not: pure rules over plain data.

An endpoint is healthy when Kubernetes says it is ready (``None`` reads as ready, as the
EndpointSlice API asks of consumers), its active probe (if any) passes, the lease of the
cluster that owns it is fresh, and its cluster is not drained.

Lease freshness is judged against a ``now`` that the caller chooses. The registry API
passes the Redis server's clock; the resolver passes the Redis time of its *last
successful sync*, so that a resolver cut off from Redis keeps its last picture instead
of watching every lease expire.
"""

from __future__ import annotations

from dataclasses import dataclass

from registry.model import Drain, Endpoint


@dataclass(frozen=True, slots=True)
class Verdict:
    healthy: bool
    reasons: tuple[str, ...] = ()


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
            age = lease_age_ms(last_seen_ms, now_ms) / 1000
            reasons.append(f"cluster lease stale: last seen {age:.1f}s ago")
    if drain is not None:
        reasons.append(f"cluster drained: {drain.reason}" if drain.reason else "cluster drained")
    return tuple(reasons)


def endpoint_reasons(endpoint: Endpoint) -> tuple[str, ...]:
    """Why this endpoint itself is out of the answers (empty: nothing wrong)."""
    reasons: list[str] = []
    if endpoint.conditions.ready is False:
        reasons.append("not ready")
    if endpoint.probe is not None and not endpoint.probe.healthy:
        detail = f": {endpoint.probe.detail}" if endpoint.probe.detail else ""
        reasons.append(f"probe failing{detail}")
    return tuple(reasons)


def verdict(endpoint: Endpoint, cluster_problems: tuple[str, ...] = ()) -> Verdict:
    reasons = cluster_problems + endpoint_reasons(endpoint)
    return Verdict(healthy=not reasons, reasons=reasons)
