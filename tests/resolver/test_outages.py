"""Telling a control-plane outage from clusters going down, on a fake clock."""

from __future__ import annotations

from registry.health import HELD_MS, Outage, effective_last_seen, lease_fresh
from resolver.outages import MASS_EXPIRY, REDIS_UNREACHABLE, REGISTRY_SILENT, ControlPlane

TTL = 6_000
CLUSTERS = ("a", "b", "c")


def fresh(plane: ControlPlane, seen: int, now: int) -> bool:
    return lease_fresh(effective_last_seen(seen, TTL, plane.outages), now, TTL)


def test_a_lease_fresh_when_an_outage_began_is_held_then_runs_a_ttl_from_its_end() -> None:
    ongoing = (Outage(10_000, None, "x"),)
    assert effective_last_seen(9_000, TTL, ongoing) == HELD_MS
    assert effective_last_seen(3_000, TTL, ongoing) == 3_000  # already stale at 10 s
    ended = (Outage(10_000, 40_000, "x"),)
    assert effective_last_seen(9_000, TTL, ended) == 40_000
    assert effective_last_seen(0, TTL, ended) == 0  # never seen stays never seen
    assert effective_last_seen(50_000, TTL, ended) == 50_000  # renewed since


def test_redis_unreachable_for_longer_than_a_heartbeat_forgives_the_leases() -> None:
    plane = ControlPlane(lease_ttl_ms=TTL)
    seen = dict.fromkeys(CLUSTERS, 10_000)
    assert plane.observe(10_000, seen, None) == []
    plane.unreachable(10_000)
    [change] = plane.observe(30_000, seen, None)  # back after 20 s
    assert (change.event, change.outage) == ("ended", Outage(10_000, 30_000, REDIS_UNREACHABLE))
    assert fresh(plane, 10_000, 30_000 + TTL) and not fresh(plane, 10_000, 30_001 + TTL)


def test_a_blip_shorter_than_a_heartbeat_forgives_nothing() -> None:
    plane = ControlPlane(lease_ttl_ms=TTL)
    plane.observe(10_000, {"a": 9_000}, None)
    plane.unreachable(10_000)
    assert plane.observe(10_500, {"a": 9_000}, None) == []
    assert plane.outages == ()


def test_a_silent_registry_holds_the_leases_until_it_speaks_again() -> None:
    plane = ControlPlane(lease_ttl_ms=TTL)
    seen = dict.fromkeys(CLUSTERS, 10_000)
    assert plane.observe(10_000, seen, 10_000) == []
    [began] = plane.observe(12_500, seen, 10_000)
    assert (began.event, began.outage.cause) == ("began", REGISTRY_SILENT)
    assert fresh(plane, 10_000, 100_000)  # held however long it lasts
    [ended] = plane.observe(100_000, seen, 99_900)
    assert ended.event == "ended" and ended.outage.end_ms == 100_000
    assert fresh(plane, 10_000, 100_000 + TTL) and not fresh(plane, 10_000, 100_001 + TTL)


def test_one_cluster_going_stale_while_the_others_report_is_its_own_fault() -> None:
    plane = ControlPlane(lease_ttl_ms=TTL)
    for now in range(10_000, 30_000, 1_000):
        seen = {"a": now, "b": now, "c": 10_000}
        assert plane.observe(now, seen, now) == []
    assert not fresh(plane, 10_000, 29_000)


def test_most_clusters_going_stale_at_once_keeps_the_last_picture() -> None:
    plane = ControlPlane(lease_ttl_ms=TTL)
    for now in range(10_000, 16_001, 1_000):
        assert plane.observe(now, {"a": now, "b": 10_000, "c": 10_000}, now) == []
    [began] = plane.observe(17_000, {"a": 17_000, "b": 10_000, "c": 10_000}, 17_000)
    assert began.outage == Outage(16_000, None, MASS_EXPIRY)
    assert fresh(plane, 10_000, 60_000)
    # b reports again: one of three stale is no longer most; c gets a TTL to follow.
    [ended] = plane.observe(60_000, {"a": 60_000, "b": 60_000, "c": 10_000}, 60_000)
    assert ended.event == "ended"
    assert fresh(plane, 10_000, 60_000 + TTL) and not fresh(plane, 10_000, 60_001 + TTL)


def test_two_clusters_one_gone_is_not_most() -> None:
    plane = ControlPlane(lease_ttl_ms=TTL)
    for now in range(10_000, 30_000, 1_000):
        assert plane.observe(now, {"a": now, "b": 10_000}, now) == []


def test_a_resolver_that_starts_into_a_dead_world_does_not_invent_a_calm_past() -> None:
    plane = ControlPlane(lease_ttl_ms=TTL)
    seen = dict.fromkeys(CLUSTERS, 1_000)
    assert plane.observe(60_000, seen, 60_000) == []
    assert plane.observe(61_000, seen, 61_000) == []
    assert not fresh(plane, 1_000, 61_000)


def test_ended_outages_are_forgotten_once_they_affect_no_lease() -> None:
    plane = ControlPlane(lease_ttl_ms=TTL)
    plane.observe(10_000, {"a": 10_000}, None)
    plane.unreachable(10_000)
    plane.observe(20_000, {"a": 10_000}, None)
    assert plane.outages
    plane.observe(20_000 + TTL + 1, {"a": 26_000}, None)
    assert plane.outages == ()


def test_a_beacon_that_vanishes_with_redis_is_silence_since_the_last_one_seen() -> None:
    plane = ControlPlane(lease_ttl_ms=TTL)
    seen = dict.fromkeys(CLUSTERS, 10_000)
    plane.observe(10_000, seen, 10_000)
    [began] = plane.observe(15_000, seen, None)  # Redis restarted empty; no registry yet
    assert began.outage == Outage(10_000, None, REGISTRY_SILENT)
    assert fresh(plane, 10_000, 60_000)


def test_clusters_of_one_partition_expiring_a_second_apart_are_still_at_once() -> None:
    plane = ControlPlane(lease_ttl_ms=TTL)
    for now in range(10_000, 16_001, 500):
        assert plane.observe(now, {"a": now, "b": 9_000, "c": 10_000}, now) == []
    assert not fresh(plane, 9_000, 15_500)  # b alone is b's fault, for now
    [began] = plane.observe(16_500, {"a": 16_500, "b": 9_000, "c": 10_000}, 16_500)
    assert began.outage == Outage(15_000, None, MASS_EXPIRY)
    assert fresh(plane, 9_000, 60_000) and fresh(plane, 10_000, 60_000)


def test_a_cluster_dead_for_longer_than_a_lease_does_not_count_towards_most() -> None:
    plane = ControlPlane(lease_ttl_ms=TTL)
    for now in range(10_000, 40_000, 1_000):
        # c died long ago; b dies at 25 s: one of the two live a lease ago.
        b = min(now, 25_000)
        assert plane.observe(now, {"a": now, "b": b, "c": 1_000}, now) == []
