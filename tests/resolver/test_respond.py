"""The responder as a pure function of (bytes, client) → bytes, checked with dnspython."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from registry.model import ClusterState, Drain, Endpoint, Service
from resolver.main import build_responder
from resolver.respond import Responder
from resolver.settings import ResolverSettings
from resolver.state import build
from resolver.zonefile import render
from tests.helpers import TOPOLOGY_FILE, topology

NAME = "api.production.global.example.com"
NOW = 1_000_000


def state(name: str, region: str, prefix: str, *, drain: Drain | None = None) -> ClusterState:
    service = Service(
        namespace="production",
        name="api",
        endpoints=tuple(Endpoint(address=f"{prefix}.{i}") for i in (1, 2, 3)),
    )
    return ClusterState(
        name=name, region=region, last_seen_ms=NOW, services=(service,), drain=drain
    )


@pytest.fixture
def responder() -> Responder:
    r = build_responder(ResolverSettings(topology=TOPOLOGY_FILE), topology())
    r.swap(
        build(
            [
                state("us-east-prod", "us-east-1", "10.1.0"),
                state("eu-west-prod", "eu-west-1", "10.2.0"),
                state("ap-south-prod", "ap-south-1", "10.3.0"),
            ],
            generation=42,
            sync_ms=NOW,
            lease_ttl_ms=6000,
        )
    )
    return r


def ask(
    r: Responder,
    name: str = NAME,
    rdtype: str | int = "A",
    *,
    client: str = "127.0.0.1",
    edns: int | bool = 0,
    flags: int = dns.flags.RD,
    rdclass: int = dns.rdataclass.IN,
    tcp: bool = False,
) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, rdclass=rdclass, use_edns=edns)
    q.flags = flags
    wire = r.handle(q.to_wire(), client, tcp=tcp)
    assert wire is not None
    reply = dns.message.from_wire(wire)
    assert reply.id == q.id
    assert reply.flags & dns.flags.QR
    assert not reply.flags & dns.flags.RA
    assert not reply.flags & dns.flags.AD
    return reply


def addresses(m: dns.message.Message) -> set[str]:
    return {rr.to_text() for rrset in m.answer for rr in rrset}


@pytest.mark.parametrize(
    ("client", "prefix"),
    [
        ("127.0.0.1", "10.1.0"),
        ("127.0.1.7", "10.1.0"),
        ("127.0.2.1", "10.2.0"),
        ("127.0.3.200", "10.3.0"),
    ],
)
def test_geo_answers_by_client_network(responder: Responder, client: str, prefix: str) -> None:
    reply = ask(responder, client=client)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AA
    assert addresses(reply) == {f"{prefix}.{i}" for i in (1, 2, 3)}
    assert reply.answer[0].ttl == 5


@pytest.mark.parametrize(("own", "expected"), [(None, 17), (7, 7)])
def test_service_answers_take_the_resolvers_ttl_unless_the_service_sets_one(
    own: int | None, expected: int
) -> None:
    """GLOBALDNS_TTL is the TTL of every answer about a service that sets none (it was
    only the nameservers', and services got a fixed 5 s)."""
    from registry.model import Port

    r = build_responder(ResolverSettings(topology=TOPOLOGY_FILE, ttl=17), topology())
    service = Service(
        namespace="production",
        name="api",
        ports=(Port(name="http", port=80),),
        endpoints=(Endpoint(address="10.1.0.1"), Endpoint(address="2001:db8::1")),
        ttl=own,
    )
    cluster = ClusterState(
        name="us-east-prod", region="us-east-1", last_seen_ms=NOW, services=(service,)
    )
    r.swap(build([cluster], generation=1, sync_ms=NOW, lease_ttl_ms=6000))
    for name, rdtype in [
        (NAME, "A"),
        (NAME, "AAAA"),
        (f"us-east-prod.{NAME}", "A"),
        (f"_http._tcp.{NAME}", "SRV"),
        (f"10-1-0-1.{NAME}", "A"),
    ]:
        [rrset] = ask(r, name, rdtype).answer
        assert rrset.ttl == expected, (name, rdtype)
    assert r.explain(NAME, 1, "127.0.0.1")["ttl"] == expected
    zone = render(r.snapshot, r.zone, regions=topology().regions, region="us-east-1")
    assert f"{NAME}.\t{expected}\tIN\tA\t10.1.0.1" in zone.splitlines()


def test_answers_rotate_between_queries(responder: Responder) -> None:
    firsts = {ask(responder).answer[0][0].to_text() for _ in range(6)}
    assert firsts == {"10.1.0.1", "10.1.0.2", "10.1.0.3"}


def test_drained_cluster_moves_clients_to_next_nearest(responder: Responder) -> None:
    clusters = [
        state("us-east-prod", "us-east-1", "10.1.0"),
        state("eu-west-prod", "eu-west-1", "10.2.0", drain=Drain()),
        state("ap-south-prod", "ap-south-1", "10.3.0"),
    ]
    responder.swap(build(clusters, generation=43, sync_ms=NOW, lease_ttl_ms=6000))
    assert addresses(ask(responder, client="127.0.2.1")) == {"10.1.0.1", "10.1.0.2", "10.1.0.3"}


def test_header_bits(responder: Responder) -> None:
    reply = ask(responder, flags=dns.flags.CD | dns.flags.AD | dns.flags.AA | dns.flags.TC)
    assert reply.flags & dns.flags.CD
    assert not reply.flags & (dns.flags.RD | dns.flags.TC)
    assert ask(responder, flags=dns.flags.RD).flags & dns.flags.RD


def test_question_echoed_as_sent(responder: Responder) -> None:
    reply = ask(responder, "ApI.PrOdUcTiOn.GLOBAL.example.COM")
    assert reply.question[0].name.to_text() == "ApI.PrOdUcTiOn.GLOBAL.example.COM."
    assert len(reply.answer[0]) == 3


@pytest.mark.parametrize(
    ("name", "rdtype", "rcode", "answers"),
    [
        ("nope.production.global.example.com", "A", dns.rcode.NXDOMAIN, 0),
        ("a.b.nope.global.example.com", "A", dns.rcode.NXDOMAIN, 0),
        ("x.api.production.global.example.com", "A", dns.rcode.NXDOMAIN, 0),
        (NAME, "MX", dns.rcode.NOERROR, 0),
        (NAME, 666, dns.rcode.NOERROR, 0),
        ("production.global.example.com", "A", dns.rcode.NOERROR, 0),
        ("global.example.com", "A", dns.rcode.NOERROR, 0),
    ],
)
def test_negative_answers_carry_the_soa(
    responder: Responder, name: str, rdtype: str | int, rcode: int, answers: int
) -> None:
    reply = ask(responder, name, rdtype)
    assert reply.rcode() == rcode
    assert reply.flags & dns.flags.AA
    assert len(reply.answer) == answers
    [soa] = reply.authority
    assert soa.rdtype == dns.rdatatype.SOA
    assert soa.name.to_text().lower() == "global.example.com."
    assert soa.ttl == 5 and soa[0].minimum == 5


def test_apex_soa_and_ns(responder: Responder) -> None:
    soa = ask(responder, "global.example.com", "SOA")
    assert soa.answer[0][0].serial == 42
    ns = ask(responder, "global.example.com", "NS")
    assert [r.target.to_text() for r in ns.answer[0]] == ["ns1.global.example.com."]
    glue = ask(responder, "ns1.global.example.com", "A")
    assert addresses(glue) == {"127.0.0.1"}


@pytest.mark.parametrize(
    ("name", "rdclass"),
    [
        ("example.org", dns.rdataclass.IN),
        ("example.com", dns.rdataclass.IN),
        (".", dns.rdataclass.IN),
        ("version.bind", dns.rdataclass.CH),
        (NAME, dns.rdataclass.CH),
    ],
)
def test_refused_outside_the_zone(responder: Responder, name: str, rdclass: int) -> None:
    reply = ask(responder, name, "TXT" if rdclass == dns.rdataclass.CH else "A", rdclass=rdclass)
    assert reply.rcode() == dns.rcode.REFUSED
    assert not reply.flags & dns.flags.AA
    assert not reply.answer and not reply.authority


def test_any_is_answered_minimally(responder: Responder) -> None:
    reply = ask(responder, NAME, "ANY")
    assert [r.rdtype for r in reply.answer] == [dns.rdatatype.A]


def test_axfr_is_refused(responder: Responder) -> None:
    assert ask(responder, "global.example.com", "AXFR", tcp=True).rcode() == dns.rcode.REFUSED


def test_edns_opt_only_when_asked(responder: Responder) -> None:
    assert ask(responder, edns=False).edns == -1
    reply = ask(responder, edns=0)
    assert (reply.edns, reply.payload) == (0, 1232)


def test_badvers(responder: Responder) -> None:
    reply = ask(responder, edns=1)
    assert reply.rcode() == dns.rcode.BADVERS
    assert reply.edns == 0 and not reply.answer


def test_notimp_clears_flags(responder: Responder) -> None:
    q = dns.message.make_query(NAME, "A")
    q.set_opcode(dns.opcode.STATUS)
    q.flags |= dns.flags.RD | dns.flags.CD
    reply = dns.message.from_wire(responder.handle(q.to_wire(), "127.0.0.1") or b"")
    assert reply.rcode() == dns.rcode.NOTIMP
    assert reply.flags & ~0xF == dns.flags.QR | (dns.opcode.STATUS << 11)


def test_silence_for_responses_and_runts(responder: Responder) -> None:
    q = dns.message.make_query(NAME, "A")
    q.flags |= dns.flags.QR
    assert responder.handle(q.to_wire(), "127.0.0.1") is None
    assert responder.handle(b"\x12\x34\x00", "127.0.0.1") is None
    assert responder.handle(b"", "127.0.0.1") is None


def test_internal_errors_become_servfail_for_that_packet(
    responder: Responder, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(responder, "_decide", broken)
    assert ask(responder, "other.production.global.example.com").rcode() == dns.rcode.SERVFAIL
    assert responder.stats["internal_error"] == 1
    monkeypatch.undo()
    assert ask(responder).rcode() == dns.rcode.NOERROR


def test_swap_invalidates_prepacked_answers(responder: Responder) -> None:
    assert addresses(ask(responder, client="127.0.2.1")) == {"10.2.0.1", "10.2.0.2", "10.2.0.3"}
    responder.swap(
        build(
            [state("us-east-prod", "us-east-1", "10.1.0")],
            generation=50,
            sync_ms=NOW,
            lease_ttl_ms=6000,
        )
    )
    assert addresses(ask(responder, client="127.0.2.1")) == {"10.1.0.1", "10.1.0.2", "10.1.0.3"}


def test_srv_names_and_their_targets() -> None:
    from registry.model import Port

    r = build_responder(ResolverSettings(topology=TOPOLOGY_FILE), topology())
    http = Port(name="http", port=8080)
    service = Service(
        namespace="production",
        name="api",
        ports=(http,),
        endpoints=(
            Endpoint(address="10.2.0.1"),
            Endpoint(address="10.2.0.2", ports=(Port(name="http", port=8081),)),
            Endpoint(address="2001:db8::5"),
        ),
    )
    cluster = ClusterState(
        name="eu-west-prod", region="eu-west-1", last_seen_ms=NOW, services=(service,)
    )
    r.swap(build([cluster], generation=1, sync_ms=NOW, lease_ttl_ms=6000))
    reply = ask(r, f"_http._tcp.{NAME}", "SRV")
    records = sorted((rr.port, rr.target.to_text()) for rr in reply.answer[0])
    assert records == [
        (8080, "10-2-0-1.api.production.global.example.com."),
        (8080, "2001-db8--5.api.production.global.example.com."),
        (8081, "10-2-0-2.api.production.global.example.com."),
    ]
    assert addresses(ask(r, "10-2-0-2.api.production.global.example.com")) == {"10.2.0.2"}
    assert addresses(ask(r, "2001-db8--5.api.production.global.example.com", "AAAA")) == {
        "2001:db8::5"
    }
    assert ask(r, "10-9-9-9.api.production.global.example.com").rcode() == dns.rcode.NXDOMAIN
    assert ask(r, f"_tcp.{NAME}", "SRV").rcode() == dns.rcode.NOERROR  # empty non-terminal
    assert ask(r, f"_grpc._tcp.{NAME}", "SRV").rcode() == dns.rcode.NXDOMAIN
    nodata = ask(r, f"_http._tcp.{NAME}", "A")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer


def test_a_service_of_a_thousand_endpoints_answers_eight_and_rotates_through_all() -> None:
    r = build_responder(ResolverSettings(topology=TOPOLOGY_FILE, rrl_rate=0), topology())
    service = Service(
        namespace="production",
        name="api",
        endpoints=tuple(Endpoint(address=f"10.1.{i // 250}.{i % 250 + 1}") for i in range(1000)),
    )
    cluster = ClusterState(
        name="us-east-prod", region="us-east-1", last_seen_ms=NOW, services=(service,)
    )
    r.swap(build([cluster], generation=1, sync_ms=NOW, lease_ttl_ms=6000))
    seen: set[str] = set()
    for _ in range(125):
        reply = ask(r)
        got = addresses(reply)
        assert len(got) == 8
        seen |= got
    assert len(seen) == 1000
