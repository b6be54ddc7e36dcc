"""The Kubernetes agent's pure core: translation, annotations, merging, sharding, leases.

No network: plain data in, plain data out, with time passed in.
"""

from __future__ import annotations

import pytest

from agents.kubernetes import annotations, cluster, election, merge, nodes, sharding
from agents.kubernetes.objects import (
    EndpointSlice,
    Key,
    KubeService,
    Lease,
    Rejected,
    SliceEndpoint,
    SlicePort,
    format_time,
    parse_lease,
    parse_service,
    parse_slice,
)
from agents.source import Target
from registry.model import ProbeState
from tests.agents import k8s

# -- translation -----------------------------------------------------------------------


def test_nil_conditions_take_the_api_defaults_and_only_the_first_address_counts() -> None:
    svc = k8s.service("web")
    raw = k8s.endpoint_slice(
        svc,
        "web-x",
        endpoints=[
            {"addresses": ["10.0.0.1", "10.0.0.9"]},
            {"addresses": ["10.0.0.2"], "conditions": {"ready": False, "terminating": None}},
            {"addresses": []},
        ],
        ports=[{"name": "http", "port": 8080}, {"name": "odd", "port": None}],
    )
    parsed = parse_slice(raw)
    assert isinstance(parsed, EndpointSlice)
    first, second = parsed.endpoints
    assert (first.address, first.ready, first.serving, first.terminating) == (
        "10.0.0.1",
        True,
        True,
        False,
    )
    assert (second.ready, second.serving, second.terminating) == (False, True, False)
    assert parsed.ports == (SlicePort("http", 8080),)
    assert len(parsed.skipped) == 2 and not parsed.placeholder


def test_placeholder_and_fqdn_slices() -> None:
    svc = k8s.service("web")
    placeholder = parse_slice(k8s.endpoint_slice(svc, "web-p", endpoints=None, ports=None))
    assert isinstance(placeholder, EndpointSlice) and placeholder.placeholder
    assert placeholder.endpoints == () and placeholder.ports == ()
    fqdn = parse_slice(k8s.endpoint_slice(svc, "web-f", family="FQDN", endpoints=[], ports=[]))
    assert isinstance(fqdn, Rejected) and "FQDN" in fqdn.reason
    unowned = parse_slice({"metadata": {"name": "x", "namespace": "y"}, "addressType": "IPv4"})
    assert isinstance(unowned, Rejected)


def test_service_and_lease_translation() -> None:
    raw = k8s.service("edge", type="LoadBalancer", ingress=["203.0.113.7"])
    raw["status"]["loadBalancer"]["ingress"].append({"hostname": "lb.example.com"})
    svc = parse_service(raw)
    assert isinstance(svc, KubeService)
    assert svc.ingress_ips == ("203.0.113.7",) and svc.ingress_hostnames == ("lb.example.com",)
    lease = parse_lease(
        {
            "metadata": {"name": "l", "namespace": "ns", "resourceVersion": "7"},
            "spec": {
                "holderIdentity": "a",
                "leaseDurationSeconds": 4,
                "renewTime": format_time(1_700_000_000_123),
            },
        }
    )
    assert isinstance(lease, Lease) and lease.renew_ms == 1_700_000_000_123
    assert format_time(1_700_000_000_123) == "2023-11-14T22:13:20.123000Z"


# -- annotations -----------------------------------------------------------------------


def test_valid_annotations() -> None:
    parsed = annotations.parse(
        {
            "globaldns.io/ttl": "30",
            "globaldns.io/policy": "weighted",
            "globaldns.io/weights": "us-east-prod=95, eu-west-prod=5",
            "globaldns.io/address-mode": "loadbalancer",
            "globaldns.io/min-ready-endpoints": "3",
            "globaldns.io/probe": "http",
            "globaldns.io/probe-port": "metrics",
            "globaldns.io/probe-path": "/healthz",
            "globaldns.io/probe-interval": "500ms",
            "globaldns.io/probe-timeout": "0.25",
            "globaldns.io/probe-fall": "4",
            "unrelated.example.com/x": "anything",
        }
    )
    assert parsed.problems == ()
    s = parsed.settings
    assert s.ttl == 30 and s.address_mode == "loadbalancer" and s.min_ready == 3
    assert s.policy is not None and s.policy.weights == {"us-east-prod": 95, "eu-west-prod": 5}
    assert s.probe == annotations.ProbeSettings(
        kind="http", port="metrics", path="/healthz", interval_s=0.5, timeout_s=0.25, fall=4
    )


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ({"globaldns.io/ttl": "0"}, "from 1 to 300"),
        ({"globaldns.io/ttl": "5s"}, "not a whole number"),
        ({"globaldns.io/policy": "failover"}, "needs 'order'"),
        ({"globaldns.io/policy": "nearest"}, "policy settings"),
        ({"globaldns.io/weights": "a:1"}, "not cluster=weight"),
        ({"globaldns.io/address-mode": "nodeport"}, "pods or loadbalancer"),
        ({"globaldns.io/probe": "icmp"}, "tcp or http"),
        ({"globaldns.io/probe": "tcp", "globaldns.io/probe-path": "/x"}, "only an http probe"),
        ({"globaldns.io/probe-port": "80"}, "without globaldns.io/probe"),
        (
            {
                "globaldns.io/probe": "tcp",
                "globaldns.io/probe-interval": "1s",
                "globaldns.io/probe-timeout": "2s",
            },
            "longer than",
        ),
        ({"globaldns.io/export": "true"}, "export is a label"),
        ({"globaldns.io/tll": "5"}, "unknown annotation"),
    ],
)
def test_invalid_annotations_leave_every_setting_at_its_default(
    given: dict[str, str], why: str
) -> None:
    parsed = annotations.parse(
        {"globaldns.io/ttl": "9", **given} if "globaldns.io/ttl" not in given else given
    )
    assert parsed.settings == annotations.DEFAULTS
    assert any(why in problem for problem in parsed.problems), parsed.problems


# -- merging and the condition table ---------------------------------------------------


@pytest.mark.parametrize(
    ("ready", "serving", "terminating", "expected"),
    [
        (True, True, False, "ready"),  # Running, Ready
        (False, False, False, "out"),  # Running, not Ready
        (False, True, True, "fallback"),  # Ready, being deleted
        (False, False, True, "out"),  # not Ready, being deleted
        (True, False, True, "ready"),  # ... with publishNotReadyAddresses
    ],
)
def test_condition_table(ready: bool, serving: bool, terminating: bool, expected: str) -> None:
    assert merge.eligibility(ready=ready, serving=serving, terminating=terminating) == expected


def ep(address: str, *, ready: bool = True, node: str | None = "n1", **kw: bool) -> SliceEndpoint:
    return SliceEndpoint(address=address, ready=ready, node=node, **kw)  # type: ignore[arg-type]


def sl(
    name: str, *endpoints: SliceEndpoint, family: int = 4, ports: tuple[SlicePort, ...] = ()
) -> EndpointSlice:
    return EndpointSlice("prod", name, "web", family, tuple(endpoints), ports)


def test_merge_dedupes_towards_the_more_eligible_copy_and_skips_unusable_addresses() -> None:
    http = (SlicePort("http", 8080),)
    merged = merge.merge(
        [
            sl("web-b", ep("10.0.0.1", ready=False, serving=False), ep("10.0.0.2"), ports=http),
            sl("web-a", ep("10.0.0.1"), ep("169.254.0.1"), ep("not-an-ip"), ports=http),
            sl("web-6", ep("fd00::0:1"), family=6, ports=http),
        ]
    )
    assert [(e.address, e.ready, e.slice) for e in merged.endpoints] == [
        ("10.0.0.1", True, "web-a"),
        ("10.0.0.2", True, "web-b"),
        ("fd00::1", True, "web-6"),
    ]
    assert len(merged.notes) == 2
    assert merged.ports == http


def test_ports_that_slices_disagree_on_stay_per_endpoint() -> None:
    merged = merge.merge(
        [
            sl("web-a", ep("10.0.0.1"), ports=(SlicePort("http", 8080), SlicePort("m", 9100))),
            sl("web-b", ep("10.0.0.2"), ports=(SlicePort("http", 8081), SlicePort("m", 9100))),
        ]
    )
    built = merge.record(KubeService("prod", "web"), annotations.DEFAULTS, merged, lambda e: None)
    assert [(p.name, p.port) for p in built.service.ports] == [("m", 9100)]
    own = {e.address: {p.name: p.port for p in e.ports or ()} for e in built.service.endpoints}
    assert own == {"10.0.0.1": {"http": 8080, "m": 9100}, "10.0.0.2": {"http": 8081, "m": 9100}}


def test_loadbalancer_mode_is_the_default_for_type_loadbalancer() -> None:
    svc = KubeService("prod", "edge", type="LoadBalancer", ingress_ips=("203.0.113.7",))
    merged = merge.merge([sl("edge-a", ep("10.0.0.1"), ep("10.0.0.2", ready=False))])
    healthy = merge.record(svc, annotations.DEFAULTS, merged, lambda e: None).service
    assert [(e.address, e.conditions.ready) for e in healthy.endpoints] == [("203.0.113.7", True)]
    failing = ProbeState(healthy=False, detail="down")
    sick = merge.record(svc, annotations.DEFAULTS, merged, lambda e: failing)
    assert sick.service.endpoints[0].conditions.ready is False
    pods = annotations.ServiceSettings(address_mode="pods")
    assert len(merge.record(svc, pods, merged, lambda e: None).service.endpoints) == 2


# -- sharding --------------------------------------------------------------------------


def test_each_pod_probes_its_node_and_the_leader_the_nodeless() -> None:
    key = ("prod", "web")
    services = {key: KubeService("prod", "web")}
    probe = annotations.ServiceSettings(probe=annotations.ProbeSettings(port="http"))
    merged = {
        key: merge.merge(
            [
                sl(
                    "a",
                    ep("10.0.0.1", node="n1"),
                    ep("10.0.0.2", node="n2"),
                    ports=(SlicePort("http", 80),),
                ),
                sl("b", ep("10.0.0.3", node=None), ports=(SlicePort("http", 81),)),
                sl("c", ep("10.0.0.4", node="n1"), ports=(SlicePort("other", 82),)),
            ]
        )
    }
    jobs = sharding.probe_jobs(services, {key: probe}, merged, node="n1", leading=False)
    assert jobs["prod/web"].targets == (Target("10.0.0.1", 80),)  # .4 has no "http" port
    jobs = sharding.probe_jobs(services, {key: probe}, merged, node="n2", leading=True)
    assert jobs["prod/web"].targets == (Target("10.0.0.2", 80), Target("10.0.0.3", 81))
    assert (
        sharding.probe_jobs(services, {key: annotations.DEFAULTS}, merged, node="n1", leading=True)
        == {}
    )


# -- building records --------------------------------------------------------------------


def picture(
    count: int, *, external: tuple[int, ...] = ()
) -> tuple[dict[Key, KubeService], dict[Key, annotations.Parsed], dict[Key, merge.Merged]]:
    services: dict[Key, KubeService] = {}
    parsed: dict[Key, annotations.Parsed] = {}
    merged: dict[Key, merge.Merged] = {}
    for i in range(count):
        key = ("prod", f"s{i:03d}")
        kind = "ExternalName" if i in external else "ClusterIP"
        services[key] = KubeService(*key, type=kind)
        parsed[key] = annotations.Parsed(annotations.DEFAULTS)
        merged[key] = merge.merge(
            [
                EndpointSlice(
                    "prod", f"s{i}-x", key[1], 4, (ep(f"10.0.{i // 250}.{i % 250 + 1}"),), ()
                )
            ]
        )
    return services, parsed, merged


def build(
    picture: tuple[dict[Key, KubeService], dict[Key, annotations.Parsed], dict[Key, merge.Merged]],
    only: list[Key] | None = None,
) -> cluster.Built:
    return cluster.build(*picture, node="n1", own={}, peers=nodes.Peers(), only=only)


def test_building_some_services_gives_what_the_whole_build_gives_for_them() -> None:
    world = picture(6, external=(3,))
    whole = build(world)
    some = build(world, only=[("prod", "s001"), ("prod", "s003"), ("prod", "gone")])
    # An ExternalName Service and an unknown key are not reported: the agent removes them.
    assert [s.key for s in some.services] == ["prod/s001"]
    assert some.services[0] == next(s for s in whole.services if s.key == "prod/s001")
    assert some.notes == (("prod/s003", "ExternalName Service: no endpoints to export; skipped"),)


def test_the_service_limit_keeps_the_same_services_whole_or_one_by_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cluster, "MAX_SERVICES_PER_CLUSTER", 3)
    world = picture(5, external=(1,))
    whole = build(world)
    assert [s.key for s in whole.services] == ["prod/s000", "prod/s002", "prod/s003"]
    assert ("*", "4 exported services; the registry keeps 3") in whole.notes
    for i in range(5):
        one = build(world, only=[("prod", f"s{i:03d}")])
        assert one.services == tuple(s for s in whole.services if s.key == f"prod/s{i:03d}")


def test_node_lease_changes_name_the_services_and_nodes_that_differ() -> None:
    up, down = ProbeState(healthy=True), ProbeState(healthy=False, detail="refused")
    before = nodes.Peers(
        verdicts={"n1": {("prod/a", "10.0.0.1"): up, ("prod/b", "10.0.0.2"): up}},
        expired={"n3": "gone"},
    )
    after = nodes.Peers(
        verdicts={
            "n1": {("prod/a", "10.0.0.1"): up, ("prod/b", "10.0.0.2"): down},
            "n2": {("prod/c", "10.0.0.3"): up},
        },
        expired={"n4": "gone"},
    )
    assert nodes.changes(before, after) == (
        frozenset({"prod/b", "prod/c"}),
        frozenset({"n3", "n4"}),
    )
    assert nodes.changes(after, after) == (frozenset(), frozenset())


# -- leases ----------------------------------------------------------------------------


def lease(holder: str | None, renew_ms: int | None, duration: int = 4) -> Lease:
    return Lease("ns", "l", "1", holder=holder, duration_s=duration, renew_ms=renew_ms)


def test_expiry_is_judged_by_observation_with_a_first_sight_credit() -> None:
    seen = election.observe(None, lease("a", 10_000), now=100.0, wall_ms=11_000)
    assert seen.since == 99.0  # renewed a second ago by its own clock
    assert not election.expired(seen, 102.9) and election.expired(seen, 103.0)
    # The same record seen again does not move; a renewal does, to *our* now.
    assert election.observe(seen, lease("a", 10_000), now=150.0, wall_ms=0) is seen
    assert election.observe(seen, lease("a", 12_000), now=150.0, wall_ms=0).since == 150.0
    # Long dead (or a clock far ahead): credited at most the whole duration.
    assert election.expired(election.observe(None, lease("a", 0), now=5.0, wall_ms=10**9), 5.0)
    assert election.expired(election.observe(None, lease(None, 10_000), now=5.0, wall_ms=0), 5.0)


def test_election_steps() -> None:
    assert election.decide(None, me="a", renewed_at=None, now=0, renew_s=1).kind == "create"
    theirs = election.observe(None, lease("b", 1000), now=10.0, wall_ms=1000)
    step = election.decide(theirs, me="a", renewed_at=None, now=11.0, renew_s=1)
    assert (step.kind, step.at) == ("wait", 14.0)
    assert election.decide(theirs, me="a", renewed_at=None, now=14.0, renew_s=1).kind == "take"
    mine = election.observe(None, lease("a", 1000), now=10.0, wall_ms=1000)
    assert election.decide(mine, me="a", renewed_at=10.0, now=10.5, renew_s=1).kind == "wait"
    assert election.decide(mine, me="a", renewed_at=10.0, now=11.0, renew_s=1).kind == "renew"
    assert election.leading(mine, me="a", renewed_at=10.0, now=12.9, deadline_s=3)
    assert not election.leading(mine, me="a", renewed_at=10.0, now=13.0, deadline_s=3)
    assert not election.leading(theirs, me="a", renewed_at=10.0, now=10.0, deadline_s=3)


def test_node_verdicts_round_trip_and_expired_nodes_are_named() -> None:
    verdicts = {("prod/web", "10.0.0.1"): ProbeState(healthy=False, detail="tcp 80: refused")}
    assert nodes.decode(nodes.encode(verdicts)) == verdicts
    assert nodes.decode("{not json") == {}

    def node_lease(node: str, renew_ms: int) -> Lease:
        return Lease(
            "ns",
            nodes.lease_name(node),
            "1",
            holder="pod",
            duration_s=3,
            renew_ms=renew_ms,
            labels={nodes.LEASE_LABEL: "node"},
            annotations={
                nodes.NODE_ANNOTATION: node,
                nodes.VERDICTS_ANNOTATION: nodes.encode(verdicts),
            },
        )

    leases = [node_lease("n1", 10_000), node_lease("n2", 5_000)]
    seen = {lease.key: election.observe(None, lease, now=100.0, wall_ms=10_000) for lease in leases}
    peers = nodes.peers(leases, seen, now=100.0)
    assert peers.verdicts == {"n1": verdicts}
    assert list(peers.expired) == ["n2"] and "lease expired" in peers.expired["n2"]
    assert len(nodes.lease_name("x" * 300)) <= 253
