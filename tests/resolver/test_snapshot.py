"""Snapshots judge leases against the sync time, and carry over vanished clusters."""

from __future__ import annotations

from registry.model import ClusterState, Endpoint, Service
from resolver.state import build

TTL = 6000


def cluster(name: str, region: str, last_seen: int, *addresses: str) -> ClusterState:
    service = Service(
        namespace="production",
        name="api",
        endpoints=tuple(Endpoint(address=a) for a in addresses),
    )
    return ClusterState(name=name, region=region, last_seen_ms=last_seen, services=(service,))


def test_lease_judged_against_sync_time_not_wall_clock() -> None:
    c = cluster("us-east-prod", "us-east-1", 10_000, "10.0.0.1")
    fresh = build([c], generation=1, sync_ms=15_000, lease_ttl_ms=TTL)
    assert fresh.live == {"us-east-prod"}
    assert fresh.services["api.production"].candidates[0].healthy
    stale = build([c], generation=1, sync_ms=16_001, lease_ttl_ms=TTL)
    assert stale.live == frozenset()
    candidate = stale.services["api.production"].candidates[0]
    assert not candidate.healthy
    assert candidate.reasons == ("cluster lease stale: no heartbeat for over 6s",)


def test_services_merge_across_clusters() -> None:
    snap = build(
        [cluster("a", "us-east-1", 1, "10.0.0.1"), cluster("b", "eu-west-1", 1, "10.0.1.1")],
        generation=7,
        sync_ms=1,
        lease_ttl_ms=TTL,
    )
    entry = snap.services["api.production"]
    assert [(x.cluster, x.address) for x in entry.candidates] == [
        ("a", "10.0.0.1"),
        ("b", "10.0.1.1"),
    ]
    assert set(snap.namespaces) == {"production"}
    assert snap.generation == 7
