"""The status page's summary: pure functions over a registry view, no Redis, no browser."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from registry import summary
from registry.grants import Grant, Grants
from registry.model import (
    ClusterState,
    Conditions,
    Drain,
    Endpoint,
    ProbeState,
    RegistryView,
    Service,
)
from tests.helpers import topology

NOW = 1_000_000
TTL = 6_000


def service(name: str, *healthy: bool, probe_failing: bool = False) -> Service:
    return Service(
        namespace="production",
        name=name,
        endpoints=tuple(
            Endpoint(
                address=f"10.0.0.{n}",
                conditions=Conditions(ready=ok),
                probe=ProbeState(healthy=False, detail="refused") if probe_failing else None,
            )
            for n, ok in enumerate(healthy, start=1)
        ),
    )


def cluster(
    name: str, region: str, *services: Service, age_ms: int = 0, drain: Drain | None = None
) -> ClusterState:
    return ClusterState(
        name=name, region=region, last_seen_ms=NOW - age_ms, services=services, drain=drain
    )


def view(*clusters: ClusterState, generation: int = 7) -> RegistryView:
    return RegistryView(generation=generation, now_ms=NOW, clusters=clusters)


@dataclass(frozen=True)
class Entry:
    id: str
    cluster: str
    kind: str
    keys: tuple[str, ...] = ()


@pytest.mark.parametrize(
    ("reported", "fresh", "drained", "healthy", "total", "expected"),
    [
        (False, False, False, 0, 0, "unknown"),
        (True, False, True, 3, 3, "stale"),  # a stale lease explains more than the drain
        (True, True, True, 3, 3, "drained"),
        (True, True, False, 0, 0, "empty"),
        (True, True, False, 3, 3, "ok"),
        (True, True, False, 1, 3, "degraded"),
        (True, True, False, 0, 3, "down"),
    ],
)
def test_cluster_state(
    reported: bool, fresh: bool, drained: bool, healthy: int, total: int, expected: str
) -> None:
    got = summary.cluster_state(
        reported=reported, lease_fresh=fresh, drained=drained, healthy=healthy, total=total
    )
    assert got == expected


@pytest.mark.parametrize(
    ("healthy", "total", "cluster", "expected"),
    [
        (2, 2, "ok", "ok"),
        (1, 2, "degraded", "partial"),
        (0, 2, "degraded", "down"),
        (0, 0, "ok", "down"),  # exported with no endpoint: nothing to give out
        (2, 2, "drained", "drained"),
        (2, 2, "stale", "stale"),
    ],
)
def test_cell_state(healthy: int, total: int, cluster: str, expected: str) -> None:
    assert summary.cell_state(healthy, total, cluster=cluster) == expected


def test_the_matrix_counts_endpoints_per_service_and_cluster() -> None:
    us = cluster("us-east-prod", "us-east-1", service("api", True, True), service("web", True))
    eu = cluster("eu-west-prod", "eu-west-1", service("api", True, False, False))
    got = summary.summarize(view(us, eu), topology(), lease_ttl_ms=TTL)
    rows = {r["service"]: r["cells"] for r in got["services"]}
    assert rows == {
        "production/api": {
            "eu-west-prod": {"healthy": 1, "total": 3, "state": "partial"},
            "us-east-prod": {"healthy": 2, "total": 2, "state": "ok"},
        },
        "production/web": {"us-east-prod": {"healthy": 1, "total": 1, "state": "ok"}},
    }
    clusters = {c["name"]: c for c in got["clusters"]}
    assert clusters["us-east-prod"]["state"] == "ok"
    assert clusters["us-east-prod"]["endpoints"] == {"healthy": 3, "total": 3}
    assert clusters["eu-west-prod"]["state"] == "degraded"
    assert clusters["ap-south-prod"]["state"] == "unknown"  # in the topology, never reported
    assert clusters["ap-south-prod"]["last_seen_ms"] == 0
    assert [r["name"] for r in got["regions"]] == ["ap-south-1", "eu-west-1", "us-east-1"]
    assert got["services_total"] == 2 and got["generation"] == 7 and got["now_ms"] == NOW


def test_a_failing_probe_is_unhealthy_in_its_cell() -> None:
    eu = cluster("eu-west-prod", "eu-west-1", service("api", True, True, probe_failing=True))
    got = summary.summarize(view(eu), topology(), lease_ttl_ms=TTL)
    assert got["services"][0]["cells"]["eu-west-prod"] == {
        "healthy": 0,
        "total": 2,
        "state": "down",
    }
    assert {c["name"]: c["state"] for c in got["clusters"]}["eu-west-prod"] == "down"


def test_a_drained_or_stale_cluster_shows_its_trouble_and_its_endpoints_own_health() -> None:
    drain = Drain(reason="kernel upgrade", by="alice", at_ms=NOW - 5_000)
    eu = cluster("eu-west-prod", "eu-west-1", service("api", True, False), drain=drain)
    ap = cluster("ap-south-prod", "ap-south-1", service("api", True, True), age_ms=TTL + 1)
    got = summary.summarize(view(eu, ap), topology(), lease_ttl_ms=TTL)
    cells = got["services"][0]["cells"]
    assert cells["eu-west-prod"] == {"healthy": 1, "total": 2, "state": "drained"}
    assert cells["ap-south-prod"] == {"healthy": 2, "total": 2, "state": "stale"}
    clusters = {c["name"]: c for c in got["clusters"]}
    assert clusters["eu-west-prod"]["state"] == "drained"
    assert clusters["ap-south-prod"]["state"] == "stale"
    assert clusters["ap-south-prod"]["lease_fresh"] is False
    assert got["drains"] == [
        {"cluster": "eu-west-prod", "reason": "kernel upgrade", "by": "alice", "at_ms": NOW - 5_000}
    ]


def test_records_a_cluster_may_not_export_are_left_out_as_the_resolver_does() -> None:
    us = cluster("us-east-prod", "us-east-1", service("api", True), service("web", True))
    grants = Grants({"us-east-prod": Grant(("production/api",))})
    got = summary.summarize(view(us), topology(), lease_ttl_ms=TTL, grants=grants)
    assert [r["service"] for r in got["services"]] == ["production/api"]


def test_past_the_cap_the_services_with_a_problem_come_first() -> None:
    names = [f"svc-{i:02d}" for i in range(10)]
    services = [service(n, n not in ("svc-07", "svc-03")) for n in names]
    got = summary.summarize(
        view(cluster("us-east-prod", "us-east-1", *services)),
        topology(),
        lease_ttl_ms=TTL,
        max_services=4,
    )
    assert [r["service"] for r in got["services"]] == [
        "production/svc-03",
        "production/svc-07",
        "production/svc-00",
        "production/svc-01",
    ]
    assert got["services_total"] == 10


def test_changes_name_their_time_and_at_most_a_few_services() -> None:
    many = tuple(f"production/s{i}" for i in range(12))
    entries = [
        Entry("1700000000123-0", "eu-west-prod", "services", many),
        Entry("1700000000001-4", "", "policy", ("production/web",)),
    ]
    got = summary.summarize(view(), topology(), lease_ttl_ms=TTL, changes=entries)
    first, second = got["changes"]
    assert first["at_ms"] == 1700000000123
    assert first["keys"] == list(many[: summary.MAX_KEYS_PER_CHANGE])
    assert first["more_keys"] == 12 - summary.MAX_KEYS_PER_CHANGE
    assert second == {
        "id": "1700000000001-4",
        "at_ms": 1700000000001,
        "cluster": "",
        "kind": "policy",
        "keys": ["production/web"],
        "more_keys": 0,
    }
    assert summary.change_time_ms("garbage") == 0


def test_a_summary_is_current_while_its_fingerprint_holds() -> None:
    us = cluster("us-east-prod", "us-east-1", service("api", True), age_ms=1_000)
    eu = cluster("eu-west-prod", "eu-west-1", service("api", True), age_ms=TTL + 1)
    built = summary.summarize(view(us, eu), topology(), lease_ttl_ms=TTL)
    seen = {"us-east-prod": NOW - 1_000, "eu-west-prod": NOW - TTL - 1}
    assert summary.fingerprint_of(built) == (7, frozenset({"us-east-prod"}))
    # A heartbeat changes nothing shown; a generation or a lease turning does.
    later = {**seen, "us-east-prod": NOW + 500}
    assert summary.fingerprint(7, later, now_ms=NOW + 900, lease_ttl_ms=TTL) == (
        summary.fingerprint_of(built)
    )
    assert summary.fingerprint(8, seen, now_ms=NOW, lease_ttl_ms=TTL)[0] == 8
    expired = summary.fingerprint(7, seen, now_ms=NOW + TTL, lease_ttl_ms=TTL)
    assert expired == (7, frozenset())


def test_builds_take_at_most_their_share_of_the_time() -> None:
    # Cheap builds: once a tick. A build of 0.5 s at a share of 0.1: 4.5 s of rest after it.
    assert summary.next_build_at(100.0, 0.01, tick_s=1.0, max_share=0.1) == 101.0
    assert summary.next_build_at(100.0, 0.5, tick_s=1.0, max_share=0.1) == pytest.approx(104.5)


def test_a_pulse_is_the_time_and_the_heartbeats() -> None:
    assert summary.pulse(NOW, {"b": 2, "a": 1}) == {"now_ms": NOW, "last_seen_ms": {"a": 1, "b": 2}}
