"""No query costs more than a small constant, whatever a report holds.

A service at the model's limits (1,000 endpoints, each with 100 ports of its own) is
answered with work that does not grow with it: the same query runs the same number of
Python steps as against a service of sixteen endpoints (lines and calls, counted with
the interpreter's hooks, never timed); SRV answers carry at most eight records; and one
decision per client bucket serves all of a service's SRV names. Also here: an
``_explain`` trace too long for one TXT record.
"""

from __future__ import annotations

import functools
import gc
import sys
from collections.abc import Callable
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from registry.model import (
    MAX_ENDPOINTS_PER_SERVICE,
    MAX_PORTS,
    ClusterState,
    Endpoint,
    Policy,
    Port,
    ProbeState,
    Service,
)
from resolver import policy
from resolver.main import build_responder
from resolver.respond import EXPLAIN_TXT_BYTES, Responder
from resolver.settings import ResolverSettings
from resolver.state import build
from tests.helpers import TOPOLOGY_FILE, topology

ZONE = "global.example.com"
NAME = f"api.production.{ZONE}"
NOW = 1_000_000
CLIENT = "127.0.1.1"  # us-east-1 in the example topology


def address(i: int) -> str:
    """Endpoints 0..499 are IPv4, 500.. IPv6."""
    return f"10.{i // 250}.{i % 250}.1" if i < 500 else f"2001:db8::{i:x}"


def ports(i: int) -> tuple[Port, ...]:
    """100 named ports; the numbers differ per endpoint, so no two endpoints share a
    port list (the worst case: nothing is shared)."""
    return tuple(Port(name=f"p{j}", port=1 + (i * MAX_PORTS + j) % 65535) for j in range(MAX_PORTS))


def service(indices: list[int], **fields: Any) -> Service:
    return Service(
        namespace="production",
        name="api",
        endpoints=tuple(Endpoint(address=address(i), ports=ports(i)) for i in indices),
        **fields,
    )


def responder(svc: Service, **settings: Any) -> Responder:
    r = build_responder(
        ResolverSettings(topology=TOPOLOGY_FILE, rrl_rate=0, **settings), topology()
    )
    cluster = ClusterState(
        name="us-east-prod", region="us-east-1", last_seen_ms=NOW, services=(svc,)
    )
    r.swap(build([cluster], generation=1, sync_ms=NOW, lease_ttl_ms=6000))
    return r


BIG = list(range(MAX_ENDPOINTS_PER_SERVICE))
SMALL = [*range(8), *range(500, 508)]  # the addresses a decision puts first in BIG


@pytest.fixture(scope="module")
def big() -> Service:
    return service(BIG)


@pytest.fixture(scope="module")
def small() -> Service:
    return service(SMALL)


def wire(name: str, rdtype: str, *, edns: int | bool = 0) -> bytes:
    query = dns.message.make_query(name, rdtype, use_edns=edns)
    query.id = 4242
    return query.to_wire()


def ask(r: Responder, name: str, rdtype: str = "A", *, tcp: bool = False) -> dns.message.Message:
    reply = r.handle(wire(name, rdtype), CLIENT, tcp=tcp)
    assert reply is not None
    return dns.message.from_wire(reply)


def steps(work: Callable[[], object]) -> int:
    """How much Python ``work`` runs: lines executed (every turn of a loop, inside
    comprehensions too) and calls made (to C functions too), counted with the
    interpreter's trace and profile hooks. A measure of work that, unlike a clock,
    is the same on every run and every machine."""
    count = 0

    def trace(frame: Any, event: str, arg: Any) -> Any:
        nonlocal count
        count += 1
        return trace

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal count
        if event == "c_call":
            count += 1

    gc.disable()  # a collection would count whatever finalizers it runs
    sys.settrace(trace)
    sys.setprofile(profile)
    try:
        work()
    finally:
        sys.setprofile(None)
        sys.settrace(None)
        gc.enable()
    return count


def cost(r: Responder, names: list[tuple[str, str]]) -> list[int]:
    queries = [wire(name, rdtype) for name, rdtype in names]
    return [steps(functools.partial(r.handle, q, CLIENT)) for q in queries]


def test_a_query_costs_the_same_against_a_service_at_the_limits(
    big: Service, small: Service
) -> None:
    """Names that miss every cache, asked of a service of 16 endpoints and of one of
    1,000 endpoints x 100 ports: the same work, step for step."""
    names = [
        # SRV names that do not exist (each one new: the old path walked every
        # endpoint's every port for each of them)
        *[(f"_x{i:04d}._tcp.{NAME}", "SRV") for i in range(20)],
        # names under the service that are neither a cluster nor an endpoint
        *[(f"10-9-9-{i}.{NAME}", "A") for i in range(20)],
        *[(f"c{i:04d}.{NAME}", "A") for i in range(20)],
        # an SRV target (an endpoint by its dashed address)
        (f"10-0-3-1.{NAME}", "A"),
        (f"2001-db8--1f4.{NAME}", "AAAA"),
    ]
    warm = [(f"_p0._tcp.{NAME}", "SRV"), (NAME, "A"), (NAME, "AAAA")]
    # existing SRV names after the first: the decision is made, the ports are looked up
    existing = [(f"_p{j}._tcp.{NAME}", "SRV") for j in (1, 50, 99)]
    costs = []
    for svc in (small, big):
        r = responder(svc)
        cost(r, warm)
        costs.append(cost(r, names) + cost(r, existing))
    assert costs[1] == costs[0]


def test_srv_answers_are_bounded_and_decided_once_per_client(
    big: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    decided: list[int] = []
    real = policy.decide

    def counting(entry: Any, family: int, *args: Any, **kwargs: Any) -> policy.Decision:
        decided.append(family)
        return real(entry, family, *args, **kwargs)

    monkeypatch.setattr(policy, "decide", counting)
    r = responder(big)
    by_address = {address(i): {p.name: p.port for p in ports(i)} for i in BIG}
    for tcp in (False, True):
        for j in range(MAX_PORTS):
            for _ in range(3):
                reply = ask(r, f"_p{j}._tcp.{NAME}", "SRV", tcp=tcp)
                assert reply.rcode() == dns.rcode.NOERROR
                [rrset] = reply.answer
                assert 1 <= len(rrset) <= policy.MAX_ANSWERS
                for rr in rrset:
                    dashed = rr.target.labels[0].decode()
                    target = next(
                        a for a in by_address if a.replace(".", "-").replace(":", "-") == dashed
                    )
                    assert rr.port == by_address[target][f"p{j}"]
    # 600 SRV answers over 100 names: one decision per address family, for all of them
    assert sorted(decided) == [4, 6]
    for i in range(200):
        assert ask(r, f"_nope{i}._tcp.{NAME}", "SRV").rcode() == dns.rcode.NXDOMAIN
    assert sorted(decided) == [4, 6]
    # a change to the service drops what was decided for it
    r.invalidate(["api.production"])
    ask(r, f"_p7._tcp.{NAME}", "SRV")
    assert sorted(decided) == [4, 4, 6, 6]


def test_weighted_picks_look_at_clusters_not_endpoints(big: Service, small: Service) -> None:
    """A weighted service's client bucket is computed for every query (its subnet's
    pick): from the clusters with healthy endpoints, kept with the entry."""
    weighted = Policy(kind="weighted", weights={"us-east-prod": 1})
    costs = []
    for svc in (small, big):
        r = responder(svc.model_copy(update={"policy": weighted}))
        cost(r, [(NAME, "A")] * 100)  # every rotation packed: from now on, only hits
        costs.append(cost(r, [(NAME, "A")] * 5))
    assert costs[1] == costs[0]


@pytest.fixture(scope="module")
def failing() -> Service:
    """500 endpoints failing their probe with long details: a trace of ~120 KB."""
    detail = "connect timed out " * 11
    return Service(
        namespace="production",
        name="api",
        endpoints=tuple(
            Endpoint(address=address(i), probe=ProbeState(healthy=False, detail=detail[:200]))
            for i in range(500)
        ),
    )


def test_an_explain_trace_too_long_for_one_record_is_cut_with_a_note(failing: Service) -> None:
    r = responder(failing)
    name = f"_explain.{NAME}"
    udp = r.handle(wire(name, "TXT", edns=0), CLIENT)
    assert udp is not None
    over_udp = dns.message.from_wire(udp)
    assert over_udp.rcode() == dns.rcode.NOERROR and over_udp.flags & dns.flags.TC
    tcp = r.handle(wire(name, "TXT", edns=0), CLIENT, tcp=True)
    assert tcp is not None
    over_tcp = dns.message.from_wire(tcp)
    assert over_tcp.rcode() == dns.rcode.NOERROR and not over_tcp.flags & dns.flags.TC
    [rrset] = over_tcp.answer
    strings = [s.decode() for s in rrset[0].strings]
    assert sum(len(s) + 1 for s in strings) <= EXPLAIN_TXT_BYTES
    assert strings[0].startswith("answer=")  # the summary comes first
    assert any(s.startswith("skip 10.0.0.1 (us-east-prod): probe failing") for s in strings)
    assert strings[-1].startswith("... ") and "more lines: GET /v1/explain" in strings[-1]
    assert r.stats["internal_error"] == 0


def test_a_short_explain_is_whole(small: Service) -> None:
    r = responder(small)
    reply = ask(r, f"_explain.{NAME}", "TXT", tcp=True)
    strings = [s.decode() for s in reply.answer[0][0].strings]
    assert not any("more lines" in s for s in strings)
