"""Every policy branch as a table, on a fake clock (sync time) and a seeded random source."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from registry.model import ClusterState, Endpoint, Policy, PolicyOverride, ProbeState, Service
from registry.records import compact
from resolver.policy import Client, Decision, decide, pinned, rotations, weighted_pick
from resolver.snapshot import Candidate, ServiceEntry
from resolver.state import State, build

ORDER_EU = ("eu-west-1", "eu-central-1", "us-east-1", "ap-south-1")
JURISDICTIONS = {"eu-west-1": "eu", "eu-central-1": "eu", "us-east-1": "us", "ap-south-1": "in"}
EU_CLIENT = Client(region="eu-west-1", jurisdiction="eu")


def c(address: str, region: str, healthy: bool = True, cluster: str | None = None) -> Candidate:
    family = 6 if ":" in address else 4
    return Candidate(
        address,
        family,
        cluster or f"{region}-prod",
        region,
        healthy,
        () if healthy else ("not ready",),
    )


def entry(
    *candidates: Candidate,
    policy: Policy | None = None,
    last_good: dict[int, tuple[str, ...]] | None = None,
) -> ServiceEntry:
    return ServiceEntry(
        "production", "api", 5, candidates, policy=policy or Policy(), last_good=last_good or {}
    )


def run(e: ServiceEntry, client: Client = EU_CLIENT, family: int = 4) -> Decision:
    return decide(e, family, client, order=ORDER_EU, jurisdictions=JURISDICTIONS)


US1, US2 = c("10.1.0.1", "us-east-1"), c("10.1.0.2", "us-east-1")
EU1, EU2 = c("10.2.0.1", "eu-west-1"), c("10.2.0.2", "eu-west-1")
FRA = c("10.4.0.1", "eu-central-1")
IN1 = c("10.3.0.1", "ap-south-1")


@pytest.mark.parametrize(
    ("candidates", "policy", "client", "addresses", "branch"),
    [
        # geo
        ([US1, EU1, EU2], Policy(), EU_CLIENT, ("10.2.0.1", "10.2.0.2"), "geo"),
        ([US1, c("10.2.0.1", "eu-west-1", False), FRA], Policy(), EU_CLIENT, ("10.4.0.1",), "geo"),
        (
            [US1, EU1, c("10.2.0.9", "eu-west-1", cluster="eu-west-canary")],
            Policy(),
            Client(region="eu-west-1", cluster="eu-west-canary"),
            ("10.2.0.9",),
            "geo",
        ),
        ([c("10.9.0.1", "mars-1")], Policy(), EU_CLIENT, ("10.9.0.1",), "geo"),
        # failover: the list decides, not the distance
        (
            [US1, EU1, IN1],
            Policy(kind="failover", order=("ap-south-1-prod", "us-east-1")),
            EU_CLIENT,
            ("10.3.0.1",),
            "failover",
        ),
        (
            [US1, EU1, c("10.3.0.1", "ap-south-1", False)],
            Policy(kind="failover", order=("ap-south-1-prod", "us-east-1")),
            EU_CLIENT,
            ("10.1.0.1",),
            "failover",
        ),
        (
            [c("10.1.0.1", "us-east-1", False), EU1],
            Policy(kind="failover", order=("us-east-1-prod",)),
            EU_CLIENT,
            ("10.2.0.1",),
            "failover-fallback",
        ),
        # all
        (
            [US1, EU1, c("10.3.0.1", "ap-south-1", False)],
            Policy(kind="all"),
            EU_CLIENT,
            ("10.1.0.1", "10.2.0.1"),
            "all",
        ),
        # residency: fenced to the client's jurisdiction, nearest first, fails closed
        ([US1, FRA], Policy(kind="residency"), EU_CLIENT, ("10.4.0.1",), "residency"),
        (
            [US1, c("10.4.0.1", "eu-central-1", False)],
            Policy(kind="residency"),
            EU_CLIENT,
            (),
            "fenced-empty",
        ),
        (
            [US1, EU1],
            Policy(kind="residency"),
            Client(region="us-east-1", jurisdiction="us"),
            ("10.1.0.1",),
            "residency",
        ),
        ([US1, EU1], Policy(kind="residency"), Client(region=None), ("10.2.0.1",), "geo"),
        # nothing healthy
        (
            [c("10.1.0.1", "us-east-1", False)],
            Policy(when_all_unhealthy="all"),
            EU_CLIENT,
            ("10.1.0.1",),
            "all-unhealthy-all",
        ),
        (
            [c("10.1.0.1", "us-east-1", False)],
            Policy(when_all_unhealthy="none"),
            EU_CLIENT,
            (),
            "all-unhealthy-none",
        ),
    ],
)
def test_branches(
    candidates: list[Candidate],
    policy: Policy,
    client: Client,
    addresses: tuple[str, ...],
    branch: str,
) -> None:
    decision = run(entry(*candidates, policy=policy), client)
    assert (decision.addresses, decision.branch) == (addresses, branch)
    assert decision.reason and decision.trace[0].startswith(f"policy {policy.kind}")


def test_last_known_good_when_nothing_is_healthy() -> None:
    down = entry(c("10.1.0.1", "us-east-1", False), last_good={4: ("10.1.0.7",)})
    decision = run(down)
    assert (decision.addresses, decision.branch) == (("10.1.0.7",), "all-unhealthy-last-known-good")
    never = run(entry(c("10.1.0.1", "us-east-1", False)))
    assert never.addresses == ("10.1.0.1",)  # nothing ever known good: every endpoint


def test_no_endpoints_of_the_family() -> None:
    decision = run(entry(EU1), family=6)
    assert decision.addresses == () and decision.branch == "empty"


def test_pinned() -> None:
    e = entry(US1, EU1, c("10.2.0.2", "eu-west-1", False))
    assert pinned(e, 4, "eu-west-1-prod").addresses == ("10.2.0.1",)
    assert pinned(entry(c("10.2.0.2", "eu-west-1", False)), 4, "eu-west-1-prod").addresses == ()


def weighted(weights: dict[str, int]) -> ServiceEntry:
    return entry(
        c("10.1.0.1", "us-east-1", cluster="blue"),
        c("10.2.0.1", "us-east-1", cluster="green"),
        policy=Policy(kind="weighted", weights=weights),
    )


def test_weighted_shares_follow_weights_and_stick() -> None:
    rng = random.Random(7)
    e = weighted({"blue": 95, "green": 5})
    subnets = [rng.getrandbits(24) for _ in range(2000)]
    picks = Counter(weighted_pick(e, 4, s) for s in subnets)
    assert 0.93 <= picks["blue"] / len(subnets) <= 0.97
    assert all(weighted_pick(e, 4, s) == weighted_pick(e, 4, s) for s in subnets[:100])
    decision = run(e, Client(region="us-east-1", pick="green"))
    assert decision.addresses == ("10.2.0.1",) and decision.branch == "weighted"


def test_weighted_blue_green_and_minimal_movement() -> None:
    rng = random.Random(11)
    subnets = [rng.getrandbits(24) for _ in range(500)]
    assert {weighted_pick(weighted({"blue": 100, "green": 0}), 4, s) for s in subnets} == {"blue"}
    before = {s: weighted_pick(weighted({"blue": 50, "green": 50}), 4, s) for s in subnets}
    three = entry(
        c("10.1.0.1", "us-east-1", cluster="blue"),
        c("10.2.0.1", "us-east-1", cluster="green"),
        c("10.3.0.1", "us-east-1", cluster="red"),
        policy=Policy(kind="weighted", weights={"blue": 50, "green": 50, "red": 50}),
    )
    after = {s: weighted_pick(three, 4, s) for s in subnets}
    # Adding a cluster only moves subnets to the new cluster, never between old ones.
    assert all(after[s] in (before[s], "red") for s in subnets)


def test_weighted_falls_back_when_no_weighted_cluster_is_healthy() -> None:
    e = entry(
        c("10.1.0.1", "us-east-1", False, cluster="blue"),
        EU1,
        policy=Policy(kind="weighted", weights={"blue": 1}),
    )
    assert weighted_pick(e, 4, 1) is None
    assert run(e, Client(region="eu-west-1")).branch == "weighted-fallback"


def spill_step(state: State, ready: list[bool], sync_ms: int) -> ServiceEntry:
    """One probe round in eu-west (three endpoints, ``ready`` each), applied incrementally."""
    policy = Policy(kind="geo", min_healthy=2, spill_hold_s=10)
    eu = Service(
        namespace="production",
        name="api",
        policy=policy,
        endpoints=tuple(
            Endpoint(address=f"10.2.0.{i}", probe=ProbeState(healthy=ok))
            for i, ok in enumerate(ready, 1)
        ),
    )
    us = Service(
        namespace="production",
        name="api",
        policy=policy,
        endpoints=(Endpoint(address="10.1.0.1"), Endpoint(address="10.1.0.2")),
    )
    for name, region, service in (
        ("eu-west-prod", "eu-west-1", eu),
        ("us-east-prod", "us-east-1", us),
    ):
        state.put_cluster(name, region=region, seq=1, last_seen_ms=sync_ms)
        state.put_records(name, {service.key: compact(service)})
    state.advance(sync_ms)
    state.rebuild(state.take_dirty())
    return state.snapshot.services["api.production"]


def test_spillover_moves_at_once_and_returns_only_after_the_hold() -> None:
    clock = 1_000_000
    state = State(lease_ttl_ms=6000)
    entry_ = spill_step(state, [True, True, True], clock)
    assert run(entry_).region == "eu-west-1"
    clock += 1000
    entry_ = spill_step(state, [True, False, False], clock)  # 1 healthy < 2
    assert run(entry_).region == "us-east-1" and "region:eu-west-1" in entry_.spilled
    # An endpoint that alternates every probe round must not flap the answer.
    regions = []
    for step in range(20):
        clock += 500
        entry_ = spill_step(state, [True, step % 2 == 0, False], clock)
        regions.append(run(entry_).region)
    assert set(regions) == {"us-east-1"}
    # Steady capacity for the hold time brings it back, judged again when the hold ends
    # even though nothing else changes.
    entry_ = spill_step(state, [True, True, False], clock + 500)
    assert run(entry_).region == "us-east-1"
    hold_ends = clock + 500 + 10_000
    for name in ("eu-west-prod", "us-east-prod"):  # heartbeats: they change nothing
        region = state.snapshot.clusters[name].region
        state.put_cluster(name, region=region, seq=1, last_seen_ms=hold_ends)
    assert state.take_dirty() == []
    assert state.next_expiry_ms() == hold_ends
    state.advance(hold_ends)
    assert state.take_dirty() == ["production/api"]
    state.rebuild(["production/api"])
    assert run(state.snapshot.services["api.production"]).region == "eu-west-1"


def test_policy_precedence_override_then_annotation_then_default() -> None:
    annotated = Service(
        namespace="production",
        name="api",
        policy=Policy(kind="all"),
        endpoints=(Endpoint(address="10.1.0.1"),),
    )
    cluster = ClusterState(
        name="us-east-prod", region="us-east-1", last_seen_ms=1, services=(annotated,)
    )
    snap = build([cluster], generation=1, sync_ms=1, lease_ttl_ms=6000)
    e = snap.services["api.production"]
    assert (e.policy.kind, e.policy_source) == ("all", "annotation from us-east-prod")
    override = PolicyOverride(policy=Policy(kind="failover", order=("us-east-1",)), by="ops")
    snap = build(
        [cluster], generation=1, sync_ms=1, lease_ttl_ms=6000, policies={"production/api": override}
    )
    e = snap.services["api.production"]
    assert (e.policy.kind, e.policy_source) == ("failover", "registry override by ops")


def test_rotations_cycle_and_cap() -> None:
    assert rotations(["a", "b", "c"]) == [("a", "b", "c"), ("b", "c", "a"), ("c", "a", "b")]
    ten = [str(i) for i in range(10)]
    assert rotations(ten) == [tuple(ten[:8]), (*ten[8:], *ten[:6])]
    thousand = [str(i) for i in range(1000)]
    assert len(rotations(thousand)) == 125
    assert {a for r in rotations(thousand) for a in r} == set(thousand)
    assert rotations([]) == [()]


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="needs 'order'"):
        Policy(kind="failover")
    with pytest.raises(ValueError, match="positive total"):
        Policy(kind="weighted", weights={"a": 0})


def test_serving_terminating_endpoints_are_the_fallback_when_nothing_is_ready() -> None:
    from registry.model import Conditions

    def service(*endpoints: Endpoint) -> ServiceEntry:
        cluster = ClusterState(
            name="us-east-prod",
            region="us-east-1",
            last_seen_ms=1,
            services=(Service(namespace="production", name="api", endpoints=endpoints),),
        )
        return build([cluster], generation=1, sync_ms=1, lease_ttl_ms=6000).services[
            "api.production"
        ]

    terminating = Conditions(ready=False, serving=True, terminating=True)
    gone = Conditions(ready=False, serving=False, terminating=True)
    only_terminating = service(
        Endpoint(address="10.1.0.1", conditions=terminating),
        Endpoint(address="10.1.0.2", conditions=gone),
    )
    decision = run(only_terminating)
    assert (decision.addresses, decision.branch) == (("10.1.0.1",), "serving-terminating")
    with_ready = service(
        Endpoint(address="10.1.0.1", conditions=terminating), Endpoint(address="10.1.0.3")
    )
    assert run(with_ready).addresses == ("10.1.0.3",)
