"""Incremental = full rebuild: any sequence of changes, applied one at a time the way the
resolver's follower applies them, gives the entries (and the answers) that a full rebuild
from the final state gives.

Two properties, both with hypothesis:

* the entries of :class:`resolver.state.State` after deltas, removals, heartbeats, lease
  expiries, drains and policy overrides equal those of :func:`resolver.state.build` over
  the final registry (except what only history can know: the endpoints last known good,
  and spill timers — so the policies here spill with no hold);
* a responder whose pre-packed answers were dropped only for the owners each rebuild
  reported answers every probe name exactly as a fresh responder over the same entries:
  no stale answer survives a change, for services, pinned names, SRV names and the
  namespaces' empty non-terminals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.model import (
    ClusterState,
    Conditions,
    Drain,
    Endpoint,
    Policy,
    PolicyOverride,
    Port,
    ProbeState,
    Service,
)
from registry.records import compact
from resolver.main import build_responder
from resolver.respond import Responder
from resolver.settings import ResolverSettings
from resolver.snapshot import ServiceEntry, Snapshot
from resolver.state import State, build, owner_of
from tests.helpers import TOPOLOGY_FILE, topology

TTL_MS = 6000
CLUSTERS = {"us-east-prod": "us-east-1", "eu-west-prod": "eu-west-1", "ap-south-prod": "ap-south-1"}
KEYS = ("production/api", "production/web", "staging/api", "batch/jobs")
POLICIES = (
    None,
    Policy(kind="all"),
    Policy(kind="failover", order=("eu-west-prod", "us-east-1")),
    Policy(kind="weighted", weights={"us-east-prod": 3, "ap-south-prod": 1}),
    Policy(kind="geo", min_healthy=2, spill_hold_s=0, when_all_unhealthy="all"),
    Policy(kind="residency", when_all_unhealthy="none"),
)

endpoints = st.builds(
    Endpoint,
    address=st.sampled_from(
        ["10.0.0.1", "10.0.0.2", "10.0.1.1", "10.0.2.1", "2001:db8::1", "2001:db8::2"]
    ),
    conditions=st.builds(
        Conditions,
        ready=st.sampled_from([None, True, False]),
        serving=st.sampled_from([None, True, False]),
        terminating=st.sampled_from([None, False, True]),
    ),
    probe=st.one_of(st.none(), st.builds(ProbeState, healthy=st.booleans())),
    ports=st.sampled_from([None, (Port(name="grpc", port=9090),)]),
)


@st.composite
def services(draw: st.DrawFn, key: str) -> Service:
    namespace, name = key.split("/")
    found = draw(st.lists(endpoints, max_size=4, unique_by=lambda e: e.address))
    return Service(
        namespace=namespace,
        name=name,
        ports=(Port(name="http", port=80),),
        endpoints=tuple(found),
        ttl=draw(st.sampled_from([None, 5, 30])),
        policy=draw(st.sampled_from(POLICIES)),
    )


@st.composite
def changes(draw: st.DrawFn) -> tuple[Any, ...]:
    kind = draw(st.sampled_from(["upsert", "upsert", "remove", "beat", "clock", "drain", "policy"]))
    cluster = draw(st.sampled_from(sorted(CLUSTERS)))
    key = draw(st.sampled_from(KEYS))
    if kind == "upsert":
        return ("upsert", cluster, key, draw(services(key)))
    if kind == "remove":
        return ("remove", cluster, key)
    if kind == "beat":
        return ("beat", cluster)
    if kind == "clock":
        return ("clock", draw(st.integers(min_value=1, max_value=8000)))
    if kind == "drain":
        return ("drain", cluster, draw(st.sampled_from([None, Drain(reason="upgrade")])))
    policy = draw(st.sampled_from(POLICIES))
    return ("policy", key, None if policy is None else PolicyOverride(policy=policy))


@dataclass
class World:
    """The registry as it really is: what a full rebuild is made from."""

    now: int = 1_000_000
    records: dict[str, dict[str, Service]] = field(default_factory=dict)
    last_seen: dict[str, int] = field(default_factory=dict)
    drains: dict[str, Drain] = field(default_factory=dict)
    policies: dict[str, PolicyOverride] = field(default_factory=dict)

    def clusters(self) -> list[ClusterState]:
        return [
            ClusterState(
                name=name,
                region=CLUSTERS[name],
                last_seen_ms=self.last_seen[name],
                services=tuple(self.records.get(name, {}).values()),
                drain=self.drains.get(name),
            )
            for name in sorted(self.last_seen)
        ]


def apply(world: World, state: State, change: tuple[Any, ...]) -> None:
    """One change, to the world and — as the follower would — to the state."""
    kind = change[0]
    if kind in ("upsert", "remove", "beat"):
        cluster = change[1]
        world.last_seen[cluster] = world.now
        state.put_cluster(cluster, region=CLUSTERS[cluster], seq=1, last_seen_ms=world.now)
        state.set_drain(cluster, world.drains.get(cluster))
    if kind == "upsert":
        _, cluster, key, service = change
        world.records.setdefault(cluster, {})[key] = service
        state.put_records(cluster, {key: compact(service)})
    elif kind == "remove":
        _, cluster, key = change
        world.records.get(cluster, {}).pop(key, None)
        state.put_records(cluster, {key: None})
    elif kind == "clock":
        world.now += change[1]
        state.advance(world.now)
    elif kind == "drain":
        _, cluster, drain = change
        if drain is None:
            world.drains.pop(cluster, None)
        else:
            world.drains[cluster] = drain
        if cluster in state.snapshot.clusters:
            state.set_drain(cluster, drain)
    elif kind == "policy":
        _, key, override = change
        if override is None:
            world.policies.pop(key, None)
        else:
            world.policies[key] = override
        state.set_policy(key, override)


def comparable(entry: ServiceEntry) -> tuple[Any, ...]:
    """An entry without what only its history can know."""
    return (
        entry.namespace,
        entry.name,
        entry.ttl,
        entry.candidates,
        entry.policy,
        entry.policy_source,
        entry.spilled,
    )


def same(incremental: Snapshot, full: Snapshot) -> None:
    assert {o: comparable(e) for o, e in incremental.services.items()} == {
        o: comparable(e) for o, e in full.services.items()
    }
    assert dict(incremental.namespaces) == dict(full.namespaces)
    assert incremental.live == full.live
    assert incremental.unhealthy == full.unhealthy


@settings(max_examples=200, deadline=None, database=None)
@given(steps=st.lists(changes(), min_size=1, max_size=40))
def test_incremental_entries_equal_a_full_rebuild(steps: list[tuple[Any, ...]]) -> None:
    world, state = World(), State(lease_ttl_ms=TTL_MS)
    state.advance(world.now)
    for change in steps:
        apply(world, state, change)
        state.rebuild(state.take_dirty())
    full = build(
        world.clusters(),
        generation=0,
        sync_ms=world.now,
        lease_ttl_ms=TTL_MS,
        policies=world.policies,
    )
    same(state.snapshot, full)


def responder_over(snapshot: Snapshot) -> Responder:
    r = build_responder(ResolverSettings(topology=TOPOLOGY_FILE, rrl_rate=0), topology())
    r.swap(snapshot)
    return r


PROBES = [
    (f"{prefix}{owner}.global.example.com", rdtype)
    for owner in ("api.production", "web.production", "api.staging", "jobs.batch")
    for prefix, rdtype in (
        ("", "A"),
        ("", "AAAA"),
        ("eu-west-prod.", "A"),
        ("_grpc._tcp.", "SRV"),
        ("_http._tcp.", "SRV"),
        ("_tcp.", "TXT"),
        ("10-0-0-1.", "A"),
    )
] + [(f"{ns}.global.example.com", "A") for ns in ("production", "staging", "batch")]
CLIENTS = ("127.0.1.9", "127.0.2.9", "127.0.3.9")


def rrsets(r: Responder, name: str, rdtype: str, client: str) -> tuple[Any, ...]:
    """The rcode and the set of records a client may get (every rotation is the same set
    when the answer fits; the set is what must not go stale)."""
    query = dns.message.make_query(name, rdtype)
    raw = r.handle(query.to_wire(), client)
    assert raw is not None
    reply = dns.message.from_wire(raw)
    return (
        dns.rcode.to_text(reply.rcode()),
        frozenset(str(rr) for rrset in reply.answer for rr in rrset),
    )


@settings(max_examples=60, deadline=None, database=None)
@given(steps=st.lists(changes(), min_size=1, max_size=25))
def test_dropping_only_the_changed_owners_leaves_no_stale_answer(
    steps: list[tuple[Any, ...]],
) -> None:
    world, state = World(), State(lease_ttl_ms=TTL_MS)
    state.advance(world.now)
    cached = responder_over(state.snapshot)
    for change in steps:
        apply(world, state, change)
        cached.invalidate(state.rebuild(state.take_dirty()))
        for name, rdtype in PROBES:  # prime (or re-use) the cache after every change
            rrsets(cached, name, rdtype, CLIENTS[len(steps) % 3])
    fresh = responder_over(state.snapshot)
    for name, rdtype in PROBES:
        for client in CLIENTS:
            got = rrsets(cached, name, rdtype, client)
            want = rrsets(fresh, name, rdtype, client)
            assert got == want, (name, rdtype, client)


def test_a_heartbeat_rebuilds_nothing_and_an_expiry_only_that_clusters_services() -> None:
    state = State(lease_ttl_ms=TTL_MS)
    for name in ("us-east-prod", "eu-west-prod"):
        state.put_cluster(name, region=CLUSTERS[name], seq=1, last_seen_ms=1000)
    state.put_records("us-east-prod", {"production/api": compact(_svc("api", "10.0.0.1"))})
    state.put_records("eu-west-prod", {"production/web": compact(_svc("web", "10.0.1.1"))})
    state.advance(1000)
    assert state.rebuild(state.take_dirty()) == {"api.production", "web.production"}
    state.put_cluster("eu-west-prod", region="eu-west-1", seq=1, last_seen_ms=5000)
    state.advance(5000)
    assert state.take_dirty() == []  # heartbeats move leases, not answers
    assert state.next_expiry_ms() == 1000 + TTL_MS + 1
    state.advance(1000 + TTL_MS + 1)
    assert state.take_dirty() == ["production/api"]  # us-east's lease ran out


def _svc(name: str, address: str) -> Service:
    return Service(namespace="production", name=name, endpoints=(Endpoint(address=address),))


def test_owner_of() -> None:
    assert owner_of("production/api") == "api.production"
