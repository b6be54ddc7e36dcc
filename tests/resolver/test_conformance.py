"""The conformance checklist (shared notes, dns-conformance.md section 3), row by row.

Every row is sent over real sockets to the real UDP/TCP servers. Where globaldns picks
one of the behaviours the checklist allows, the comment says which.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import pytest

from tests.resolver.conformance_server import Running, running_server

API = "api.production.global.example.com"
ZONE = "global.example.com"


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    long_names = {f"ns{i:02d}-{'x' * 50}.{ZONE}": ("127.0.0.1",) for i in range(40)}
    with running_server(nsid="gdns-test-1", rrl_rate=0, nameservers=long_names) as running:
        yield running


def udp(server: Running, wire: bytes) -> bytes:
    """The reply to ``wire``; the timeout is only a hang guard (RRL is off here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(wire, ("127.0.0.1", server.port))
        return sock.recv(65535)


def unanswered(server: Running, wire: bytes) -> bool:
    """Whether ``wire`` gets no reply, told by order rather than by a timeout: a normal
    query sent right after it on the same socket must be the first one answered."""
    probe = dns.message.make_query(API, "A")
    probe.id = 0x4321
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(wire, ("127.0.0.1", server.port))
        sock.sendto(probe.to_wire(), ("127.0.0.1", server.port))
        first = dns.message.from_wire(sock.recv(65535))
    return first.id == probe.id and bool(first.flags & dns.flags.QR)


def tcp(server: Running, wire: bytes) -> bytes | None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(len(wire).to_bytes(2, "big") + wire)
        head = sock.recv(2)
        if len(head) < 2:
            return None
        length = int.from_bytes(head, "big")
        data = b""
        while len(data) < length:
            chunk = sock.recv(length - len(data))
            if not chunk:
                break
            data += chunk
        return data


def query(
    name: str = API,
    rdtype: int | str = "A",
    *,
    rdclass: int = dns.rdataclass.IN,
    flags: int = 0,
    edns: int | bool = 0,
    payload: int = 1232,
    ednsflags: int = 0,
    options: list[dns.edns.Option] | None = None,
) -> bytes:
    q = dns.message.make_query(
        name,
        rdtype,
        rdclass=rdclass,
        use_edns=edns,
        payload=payload,
        ednsflags=ednsflags,
        options=options,
    )
    q.id = 0x1234
    q.flags = flags
    return q.to_wire()


def decode(wire: bytes | None) -> dns.message.Message:
    assert wire is not None, "no answer"
    return dns.message.from_wire(wire)


def header(wire: bytes | None) -> tuple[int, int, int, int, int, int]:
    assert wire is not None and len(wire) >= 12
    return struct.unpack("!HHHHHH", wire[:12])


def flagset(m: dns.message.Message) -> set[str]:
    return set(dns.flags.to_text(m.flags).split())


# -- rows 1-9: the basics -----------------------------------------------------------


def test_row01_baseline(server: Running) -> None:
    m = decode(udp(server, query()))
    assert m.rcode() == dns.rcode.NOERROR and flagset(m) == {"QR", "AA"}
    assert (m.edns, m.payload) == (0, 1232)
    assert len(m.answer) == 1 and not m.authority and not m.additional


def test_row02_rd_copied_ra_never(server: Running) -> None:
    assert flagset(decode(udp(server, query(flags=dns.flags.RD)))) == {"QR", "AA", "RD"}


def test_row03_mixed_case(server: Running) -> None:
    m = decode(udp(server, query("ApI.pRoDuCtIoN.GlObAl.ExAmPlE.cOm")))
    assert m.question[0].name.to_text() == "ApI.pRoDuCtIoN.GlObAl.ExAmPlE.cOm."
    assert m.rcode() == dns.rcode.NOERROR and m.answer


@pytest.mark.parametrize("name", [f"nope.{ZONE}", f"a.b.nope.{ZONE}"])
def test_rows04_05_nxdomain_and_below(server: Running, name: str) -> None:
    m = decode(udp(server, query(name)))
    assert m.rcode() == dns.rcode.NXDOMAIN and "AA" in flagset(m)
    [soa] = m.authority
    assert soa.rdtype == dns.rdatatype.SOA and soa.ttl == min(soa.ttl, soa[0].minimum)


def test_row06_nodata(server: Running) -> None:
    m = decode(udp(server, query(rdtype="MX")))
    assert m.rcode() == dns.rcode.NOERROR and not m.answer
    assert [r.rdtype for r in m.authority] == [dns.rdatatype.SOA]


def test_row07_empty_non_terminal(server: Running) -> None:
    m = decode(udp(server, query(f"production.{ZONE}")))
    assert m.rcode() == dns.rcode.NOERROR and not m.answer and m.authority


@pytest.mark.parametrize(
    ("name", "rdtype"), [("www.example.org", "A"), ("example.com", "A"), (".", "NS")]
)
@pytest.mark.parametrize("rd", [0, dns.flags.RD])
def test_rows08_09_out_of_zone(server: Running, name: str, rdtype: str, rd: int) -> None:
    m = decode(udp(server, query(name, rdtype, flags=rd)))
    assert m.rcode() == dns.rcode.REFUSED
    assert flagset(m) == ({"QR", "RD"} if rd else {"QR"})
    assert not m.answer and not m.authority
    [ede] = [o for o in m.options if o.otype == dns.edns.EDE]
    assert ede.code == dns.edns.EDECode.NOT_AUTHORITATIVE


# -- rows 10-18: types and classes ----------------------------------------------------


@pytest.mark.parametrize("transport", [udp, tcp])
def test_row10_any_is_minimal(server: Running, transport: object) -> None:
    m = decode(transport(server, query(rdtype="ANY")))  # type: ignore[operator]
    assert [r.rdtype for r in m.answer] == [dns.rdatatype.A]


@pytest.mark.parametrize("rdtype", [666, 1000, 0])
def test_rows11_12_unknown_and_zero_qtype_are_nodata(server: Running, rdtype: int) -> None:
    # Row 12 allows FORMERR or NODATA for qtype 0: globaldns answers NODATA, like NSD/BIND.
    m = decode(udp(server, query(rdtype=rdtype)))
    assert m.rcode() == dns.rcode.NOERROR and not m.answer and "AA" in flagset(m)


@pytest.mark.parametrize(
    ("rdtype", "rcode"),
    [
        (41, dns.rcode.FORMERR),
        (249, dns.rcode.FORMERR),
        (250, dns.rcode.FORMERR),
        (253, dns.rcode.NOTIMP),
        (254, dns.rcode.NOTIMP),
    ],
)
def test_row13_meta_qtypes(server: Running, rdtype: int, rcode: int) -> None:
    wire = query(edns=False)
    wire = wire[:-4] + struct.pack("!HH", rdtype, 1)
    assert decode(udp(server, wire)).rcode() == rcode


@pytest.mark.parametrize(("rdtype", "transport"), [("AXFR", udp), ("IXFR", udp), ("AXFR", tcp)])
def test_rows14_15_transfers_refused(server: Running, rdtype: str, transport: object) -> None:
    m = decode(transport(server, query(ZONE, rdtype)))  # type: ignore[operator]
    assert m.rcode() == dns.rcode.REFUSED and not m.answer and "AA" not in flagset(m)
    assert [o.code for o in m.options if o.otype == dns.edns.EDE] == [dns.edns.EDECode.PROHIBITED]


@pytest.mark.parametrize(
    ("name", "rdclass"),
    [
        ("version.bind", dns.rdataclass.CH),
        ("id.server", dns.rdataclass.CH),
        (API, dns.rdataclass.HS),
        (API, dns.rdataclass.NONE),
        (API, 42),
        (API, dns.rdataclass.ANY),
    ],
)
def test_rows16_17_18_other_classes_refused(server: Running, name: str, rdclass: int) -> None:
    # Row 18 allows answering class ANY as IN; globaldns refuses it, as it does every
    # class but IN.
    m = decode(udp(server, query(name, "TXT", rdclass=rdclass)))
    assert m.rcode() == dns.rcode.REFUSED and not m.answer


# -- rows 19-25: header bits and opcodes -------------------------------------------------


def test_row19_query_bits(server: Running) -> None:
    bits = dns.flags.AA | dns.flags.AD | dns.flags.CD | 0x0040
    m = decode(udp(server, query(flags=bits)))
    assert flagset(m) == {"QR", "AA", "CD"}
    assert header(udp(server, query(flags=bits)))[1] & 0x0040 == 0  # Z clear


def test_row20_tc_in_query_is_ignored(server: Running) -> None:
    m = decode(udp(server, query(flags=dns.flags.TC)))
    assert m.rcode() == dns.rcode.NOERROR and "TC" not in flagset(m)


def test_row21_responses_are_never_answered(server: Running) -> None:
    assert unanswered(server, query(flags=dns.flags.QR))


@pytest.mark.parametrize("opcode", [1, 2, 3, 4, 5, 6, 15])
def test_rows22_23_24_other_opcodes_notimp(server: Running, opcode: int) -> None:
    # Rows 23/24 allow REFUSED or NOTIMP for NOTIFY/UPDATE: globaldns says NOTIMP to all.
    wire = bytearray(query(edns=False, flags=dns.flags.RD | dns.flags.CD))
    wire[2] |= opcode << 3
    ident, flags, qd, an, ns, ar = header(udp(server, bytes(wire)))
    assert ident == 0x1234
    assert flags == 0x8000 | (opcode << 11) | dns.rcode.NOTIMP
    assert (qd, an, ns, ar) == (0, 0, 0, 0)


def test_row25_opcode15_every_flag(server: Running) -> None:
    _ident, flags, *_ = header(udp(server, bytes.fromhex("12347ff00000000000000000")))
    assert flags == 0x8000 | (15 << 11) | dns.rcode.NOTIMP


# -- rows 26-39: malformed packets -----------------------------------------------------

QNAME_API = b"\x03api\x0aproduction\x06global\x07example\x03com\x00"
OPT_RR = bytes.fromhex("00002904d0000000000000")


@pytest.mark.parametrize(
    ("hexdata", "opt"),
    [
        ("123400000000000000000000", False),  # row 26: QDCOUNT 0
        ("12340000000000000000000100002904d0000000000000", True),  # row 27: + OPT
    ],
)
def test_rows26_27_no_question(server: Running, hexdata: str, opt: bool) -> None:
    wire = udp(server, bytes.fromhex(hexdata))
    _ident, flags, _qd, _an, _ns, ar = header(wire)
    assert flags & 0xF == dns.rcode.FORMERR and flags & 0x8000
    assert ar == (1 if opt else 0)


@pytest.mark.parametrize(
    "wire",
    [
        struct.pack("!HHHHHH", 0x1234, 0, 2, 0, 0, 0)
        + QNAME_API
        + b"\0\1\0\1"
        + QNAME_API
        + b"\0\1\0\1",  # row 28: two questions
        bytes.fromhex("123400000001000000000000"),  # row 29: header only
        struct.pack("!HHHHHH", 0x1234, 0, 1, 0, 0, 0) + QNAME_API + b"\x00",  # row 31
        struct.pack("!HHHHHH", 0x1234, 0, 1, 0, 0, 0) + QNAME_API + b"\0\1\0\1\xde\xad\xbe\xef",
        struct.pack("!HHHHHH", 0x1234, 0, 1, 0, 0, 1) + QNAME_API + b"\0\1\0\1",  # row 33
        bytes.fromhex("123400000001000000000000c00c00010001"),  # row 34: pointer loop
        bytes.fromhex("123400000001000000000000c0ff00010001"),  # row 35: pointer past end
        bytes.fromhex("123400000001000000000000c00200010001"),  # row 36: into the header
        bytes.fromhex("12340000000100000000000041610000010001"),  # row 37: label type 0x40
        struct.pack("!HHHHHH", 0x1234, 0, 1, 0, 0, 0)
        + (b"\x3f" + b"a" * 63) * 4
        + b"\x00\x00\x01\x00\x01",  # row 38: name > 255
    ],
    ids=["row28", "row29", "row31", "row32", "row33", "row34", "row35", "row36", "row37", "row38"],
)
@pytest.mark.parametrize("transport", [udp, tcp])
def test_rows28_to_38_malformed_is_formerr(server: Running, wire: bytes, transport: object) -> None:
    # Rows 34-36 allow FORMERR or silence: globaldns does not follow pointers in the
    # question at all (nothing legitimate precedes it) and says FORMERR.
    ident, flags, *_ = header(transport(server, wire))  # type: ignore[operator]
    assert ident == 0x1234 and flags & 0xF == dns.rcode.FORMERR and flags & 0x8000


@pytest.mark.parametrize("wire", [b"", b"\x12\x34\x00\x00\x00"])
def test_row30_runts_are_dropped(server: Running, wire: bytes) -> None:
    assert unanswered(server, wire)


def test_row39_binary_label_is_legal(server: Running) -> None:
    wire = (
        struct.pack("!HHHHHH", 0x1234, 0, 1, 0, 0, 0) + b"\x03a\x00b" + QNAME_API[4:] + b"\0\1\0\1"
    )
    m = decode(udp(server, wire))
    assert m.rcode() == dns.rcode.NXDOMAIN and "AA" in flagset(m)


# -- rows 40-55: EDNS ------------------------------------------------------------------


def test_row40_badvers(server: Running) -> None:
    m = decode(udp(server, query(edns=1)))
    assert m.rcode() == dns.rcode.BADVERS and m.edns == 0 and m.payload == 1232
    assert not m.answer


@pytest.mark.parametrize(
    ("options", "ednsflags"),
    [
        ([dns.edns.GenericOption(100, b"xyz")], 0),
        ([], 0x0080),
        ([dns.edns.GenericOption(11, b"")], 0),
    ],
    ids=["row41-unknown-option", "row42-unknown-flag", "row65-keepalive-over-udp"],
)
def test_rows41_42_65_unknown_edns_is_ignored(
    server: Running, options: list[dns.edns.Option], ednsflags: int
) -> None:
    m = decode(udp(server, query(options=options, ednsflags=ednsflags)))
    assert m.rcode() == dns.rcode.NOERROR and m.answer
    assert m.options == () and m.ednsflags == 0


def test_row43_do_echoed(server: Running) -> None:
    m = decode(udp(server, query(ednsflags=dns.flags.DO)))
    assert m.ednsflags & dns.flags.DO
    assert all(r.rdtype != dns.rdatatype.RRSIG for r in m.answer)


@pytest.mark.parametrize("payload", [0, 100, 511])
def test_row44_small_payload_is_512(server: Running, payload: int) -> None:
    # 40 long NS names do not fit 512 octets: TC, and the reply itself fits 512.
    wire = udp(server, query(ZONE, "NS", payload=payload))
    assert wire is not None and len(wire) <= 512
    assert "TC" in flagset(decode(wire))


@pytest.mark.parametrize(("edns", "limit"), [(0, 1232), (False, 512)])
def test_rows45_46_truncation(server: Running, edns: int | bool, limit: int) -> None:
    wire = udp(server, query(ZONE, "NS", edns=edns, payload=65535))
    m = decode(wire)
    assert wire is not None and len(wire) <= limit
    assert "TC" in flagset(m) and not m.answer and not m.authority
    assert (m.edns == 0) == (edns is not False)


def test_row47_full_answer_over_tcp(server: Running) -> None:
    wire = tcp(server, query(ZONE, "NS", payload=65535))
    m = decode(wire)
    assert wire is not None and len(wire) > 1232
    assert "TC" not in flagset(m) and len(m.answer[0]) == 40


@pytest.mark.parametrize(
    "wire",
    [
        struct.pack("!HHHHHH", 0x1234, 0, 1, 0, 0, 2) + QNAME_API + b"\0\1\0\1" + OPT_RR + OPT_RR,
        struct.pack("!HHHHHH", 0x1234, 0, 1, 1, 0, 0) + QNAME_API + b"\0\1\0\1" + OPT_RR,
        struct.pack("!HHHHHH", 0x1234, 0, 1, 0, 0, 1) + QNAME_API + b"\0\1\0\1" + b"\x01x" + OPT_RR,
        struct.pack("!HHHHHH", 0x1234, 0, 1, 0, 0, 1)
        + QNAME_API
        + b"\0\1\0\1"
        + bytes.fromhex("00002904d0000000000010"),
        struct.pack("!HHHHHH", 0x1234, 0, 1, 0, 0, 1)
        + QNAME_API
        + b"\0\1\0\1"
        + bytes.fromhex("00002904d00000000000040064000a"),
    ],
    ids=[
        "row48-two-opt",
        "row49-opt-in-answer",
        "row50-owner-not-root",
        "row51-rdlen-overrun",
        "row51-option-overrun",
    ],
)
def test_rows48_to_51_bad_opt_is_formerr(server: Running, wire: bytes) -> None:
    _ident, flags, *_ = header(udp(server, wire))
    assert flags & 0xF == dns.rcode.FORMERR


def test_row51_formerr_carries_an_opt(server: Running) -> None:
    wire = (
        struct.pack("!HHHHHH", 0x1234, 0, 1, 0, 0, 1)
        + QNAME_API
        + b"\0\1\0\1"
        + bytes.fromhex("00002904d00000000000040064000a")
    )
    m = decode(udp(server, wire))
    assert m.rcode() == dns.rcode.FORMERR and m.edns == 0


def test_row52_ext_rcode_in_query_ignored(server: Running) -> None:
    wire = (
        struct.pack("!HHHHHH", 0x1234, 0, 1, 0, 0, 1)
        + QNAME_API
        + b"\0\1\0\1"
        + bytes.fromhex("00002904d0050000000000")
    )
    assert decode(udp(server, wire)).rcode() == dns.rcode.NOERROR


def test_row53_nsid(server: Running) -> None:
    m = decode(udp(server, query(options=[dns.edns.NSIDOption(b"")])))
    [nsid] = [o for o in m.options if o.otype == dns.edns.NSID]
    assert nsid.nsid == b"gdns-test-1"


def test_row54_cookies(server: Running) -> None:
    client = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    m = decode(udp(server, query(options=[dns.edns.CookieOption(client, b"")])))
    [cookie] = [o for o in m.options if o.otype == dns.edns.COOKIE]
    assert cookie.client == client and len(cookie.server) == 16
    # The server cookie we handed out is accepted back (and such a client skips RRL).
    again = decode(udp(server, query(options=[dns.edns.CookieOption(client, cookie.server)])))
    assert again.rcode() == dns.rcode.NOERROR
    assert server.responder._cookie_valid("127.0.0.1", client + cookie.server)
    assert not server.responder._cookie_valid("127.0.0.2", client + cookie.server)


@pytest.mark.parametrize("length", [5, 41])
def test_row55_bad_cookie_length_is_formerr(server: Running, length: int) -> None:
    m = decode(udp(server, query(options=[dns.edns.GenericOption(10, b"\x01" * length)])))
    assert m.rcode() == dns.rcode.FORMERR and m.edns == 0


# -- rows 56-64: client subnet ----------------------------------------------------------


def ecs(raw: bytes) -> list[dns.edns.Option]:
    return [dns.edns.GenericOption(8, raw)]


def scope_of(m: dns.message.Message) -> tuple[int, int, int]:
    [opt] = [o for o in m.options if o.otype == dns.edns.ECS]
    return opt.family, opt.srclen, opt.scopelen


def test_row56_ecs_locates_and_scopes(server: Running) -> None:
    # 127.0.2.0/24 is eu-west-1 in the example topology; the answer is Europe's, and
    # the scope says it holds for that whole /24.
    m = decode(udp(server, query(options=[dns.edns.ECSOption("127.0.2.0", 24)])))
    assert {r.to_text() for r in m.answer[0]} == {"10.2.0.1", "10.2.0.2", "10.2.0.3"}
    assert scope_of(m) == (1, 24, 24)


def test_row57_ecs_zero_uses_the_source(server: Running) -> None:
    m = decode(udp(server, query(options=[dns.edns.ECSOption("0.0.0.0", 0)])))
    assert scope_of(m) == (1, 0, 0)
    assert {r.to_text() for r in m.answer[0]} == {"10.1.0.1", "10.1.0.2", "10.1.0.3"}


def test_row58_ecs_v6(server: Running) -> None:
    m = decode(udp(server, query(options=[dns.edns.ECSOption("2001:db8:aa::", 56)])))
    family, src, scope = scope_of(m)
    assert (family, src) == (2, 56) and scope <= 56


@pytest.mark.parametrize(
    "raw",
    [
        bytes.fromhex("00012100c0000201"),  # row 59: /33 for IPv4
        bytes.fromhex("00011808c00002"),  # row 60: scope 8 in a query
        bytes.fromhex("00011400c00002"),  # row 61: bits past /20
        bytes.fromhex("00010800c00002"),  # row 62: /8 with three octets
        bytes.fromhex("00031800c00002"),  # row 63: family 3
        bytes.fromhex("0001"),  # row 63: truncated
    ],
    ids=["row59", "row60", "row61", "row62", "row63-family", "row63-truncated"],
)
def test_rows59_to_63_bad_ecs_is_formerr_with_opt(server: Running, raw: bytes) -> None:
    m = decode(udp(server, query(options=ecs(raw))))
    assert m.rcode() == dns.rcode.FORMERR and m.edns == 0


@pytest.mark.parametrize(("name", "rdtype"), [(ZONE, "SOA"), (ZONE, "NS"), (f"nope.{ZONE}", "A")])
def test_row64_scope_zero_when_location_does_not_matter(
    server: Running, name: str, rdtype: str
) -> None:
    m = decode(udp(server, query(name, rdtype, options=[dns.edns.ECSOption("127.0.2.0", 24)])))
    assert scope_of(m) == (1, 24, 0)


# -- rows 66-68: TCP -------------------------------------------------------------------


def test_row66_pipelined(server: Running) -> None:
    wires = [query(f"n{i}.{ZONE}") for i in range(2)]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"".join(len(w).to_bytes(2, "big") + w for w in wires))
        stream = sock.makefile("rb")
        replies = []
        for _ in wires:
            length = int.from_bytes(stream.read(2), "big")
            replies.append(dns.message.from_wire(stream.read(length)))
    assert [r.rcode() for r in replies] == [dns.rcode.NXDOMAIN] * 2


def test_row67_zero_length_closes(server: Running) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"\x00\x00")
        assert sock.recv(10) == b""


def test_row68_stalled_message_is_cut_off() -> None:
    # The idle timeout is made far longer than the hang guard, so a connection that
    # closes can only have been cut off by the read timeout, inside the message: which
    # timer fired is shown by the outcome, not by timing the close.
    with (
        running_server(tcp_idle_timeout_s=3600, tcp_read_timeout_s=0.5) as stalled,
        socket.create_connection(("127.0.0.1", stalled.port), timeout=30) as sock,
    ):
        sock.sendall(b"\x00\x40" + b"\x00" * 10)
        assert sock.recv(10) == b""


def test_keepalive_over_tcp_is_answered(server: Running) -> None:
    m = decode(tcp(server, query(options=[dns.edns.GenericOption(11, b"")])))
    [keepalive] = [o for o in m.options if o.otype == 11]
    assert keepalive.to_wire() == struct.pack("!H", 50)


# -- rows 69-71: TSIG and abuse ----------------------------------------------------------


def test_row69_tsig_unknown_key_is_badkey(server: Running) -> None:
    keyring = dns.tsigkeyring.from_text({"unknown.key.": "c2VjcmV0c2VjcmV0c2VjcmV0"})
    q = dns.message.make_query(API, "A")
    q.use_tsig(keyring, keyname="unknown.key.", algorithm=dns.tsig.HMAC_SHA256)
    wire = udp(server, q.to_wire())
    assert wire is not None
    assert header(wire)[1] & 0xF == dns.rcode.NOTAUTH
    with pytest.raises(dns.tsig.PeerBadKey):
        dns.message.from_wire(wire, keyring=keyring, request_mac=q.mac)


def test_row70_many_additional_records_rejected_before_parsing(server: Running) -> None:
    rr = b"\x00\x00\x10\x00\x01\x00\x00\x00\x00\x00\x01\x00"
    wire = struct.pack("!HHHHHH", 0x1234, 0, 1, 0, 0, 60) + QNAME_API + b"\0\1\0\1" + rr * 60
    assert header(udp(server, wire))[1] & 0xF == dns.rcode.FORMERR


def test_row71_caa_with_bad_utf8_in_additional(server: Running) -> None:
    wire = bytes.fromhex("12340000000100000000000100000100010000010100010000000000050003fffefd")
    assert header(udp(server, wire))[1] & 0xF == dns.rcode.FORMERR


def test_the_server_is_unharmed_after_the_battery(server: Running) -> None:
    m = decode(udp(server, query()))
    assert m.rcode() == dns.rcode.NOERROR and m.answer
    assert server.responder.stats["internal_error"] == 0
    assert server.responder.last_error is None


# -- found by the property tests and the fuzzer -------------------------------------------


def test_a_dot_inside_a_label_aliases_nothing(server: Running) -> None:
    wire = (
        struct.pack("!HHHHHH", 0x1234, 0, 1, 0, 0, 0)
        + b"\x0eapi.production"
        + QNAME_API[15:]
        + b"\0\1\0\1"
    )
    assert decode(udp(server, wire)).rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize(
    ("name", "rdclass", "rcode"),
    [
        ("_explain.example.com", dns.rdataclass.IN, dns.rcode.REFUSED),
        ("_explain.", dns.rdataclass.IN, dns.rcode.REFUSED),
        (f"_explain.{ZONE}", dns.rdataclass.CH, dns.rcode.REFUSED),
        (f"_explain.{API}", dns.rdataclass.IN, dns.rcode.NOERROR),
    ],
)
def test_explain_txt_stays_inside_the_zone(
    server: Running, name: str, rdclass: int, rcode: int
) -> None:
    m = decode(udp(server, query(name, "TXT", rdclass=rdclass)))
    assert m.rcode() == rcode
    if rcode == dns.rcode.NOERROR:
        first = m.answer[0][0].strings[0].decode()
        assert first.startswith("answer=10.1.0.")


def test_explain_txt_is_refused_to_untrusted_sources(server: Running) -> None:
    responder = server.responder
    wire = query(f"_explain.{API}", "TXT")
    reply = dns.message.from_wire(responder.handle(wire, "192.0.2.1") or b"")
    assert reply.rcode() == dns.rcode.REFUSED


def test_bad_counts_still_echo_the_question(server: Running) -> None:
    wire = struct.pack("!HHHHHH", 0x1234, 0, 1, 1, 0, 0) + QNAME_API + b"\0\1\0\1"
    _ident, flags, qd, *_ = header(udp(server, wire))
    assert flags & 0xF == dns.rcode.FORMERR and qd == 1


@pytest.mark.parametrize("rdtype", ["MX", "TXT", "NS"])
def test_nameserver_names_answer_only_address_types(server: Running, rdtype: str) -> None:
    m = decode(udp(server, query(f"ns00-{'x' * 50}.{ZONE}", rdtype)))
    assert m.rcode() == dns.rcode.NOERROR and not m.answer
    assert [r.rdtype for r in m.authority] == [dns.rdatatype.SOA]
