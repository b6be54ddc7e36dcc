"""Property tests: ``Responder.handle`` as a pure function of bytes, against invariants.

The invariants are those of the conformance notes (section 3, "Derived invariants for
property and fuzz tests"), checked for UDP and for TCP:

* ``handle`` never raises, and no internal error is hidden behind a SERVFAIL either;
* silence (None) exactly for inputs shorter than 12 octets and for QR=1; bytes otherwise;
* the response ID is the query's; QR=1, RA=0, Z=0, AD=0; OPCODE echoed;
* over UDP the response fits max(512, min(bufsize, 1232)) with a parseable OPT, 512
  without; TC=1 only when the full (TCP) response would not fit, and then the answer
  section is empty, else the answer is whole; TC=0 over TCP;
* an OPT in the response iff the query had a parseable OPT (version 0, DO echoed);
* the question echoed byte for byte whenever QDCOUNT=1, the question parsed and the
  rcode is not NOTIMP;
* every answer owner is inside global.example.com; AA=1 only for a qname inside the zone
  with NOERROR or NXDOMAIN, and, for a well-formed QUERY of class IN, always then;
* every response decodes with dnspython (an independent codec).

Queries are generated valid (names that exist, the apex, nameservers, NXDOMAIN, deep and
out-of-zone names, mixed case, binary and 63-octet labels, names near 255 octets; every
qtype and class; random flag bits and opcodes; EDNS with random version, DO, payload
size and options: ECS, NSID, COOKIE, unknown; sometimes a second OPT, a TSIG or another
record), encoded by hand, then, in the second property, mutated byte-wise.

What the invariants are checked against is worked out from the query bytes by
:func:`inspect`, not by ``resolver.wire``. How far a query is read, and so whether it
"had a parseable OPT", follows ``wire.parse``:

* the additional section is read only for OPCODE=QUERY with ANCOUNT=NSCOUNT=0 and
  ARCOUNT<=2, and QDCOUNT=0 or a question that parses (an uncompressed name of at most
  255 octets, type and class present); otherwise no OPT counts as read;
* its records are walked in order; each needs a well-formed owner (pointers allowed) and
  its fixed fields and RDATA inside the message. Apart from OPT, a query may carry only
  SIG(0) and, as its last record, TSIG: the walk stops at anything else;
* the first OPT met is *parseable* when its owner is the root and its RDATA is a
  well-formed list of options. Option contents are not judged here: an ECS or COOKIE the
  server rejects makes the answer FORMERR, still with an OPT. What follows a parseable
  OPT (a second OPT, trailing bytes) makes the query FORMERR but does not take its OPT.
* a first OPT that is not parseable (owner not the root, RDATA or an option running past
  its end) must be answered FORMERR; whether that FORMERR carries an OPT is not judged.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import TypeVar

import dns.flags
import dns.message
import dns.name
import dns.rcode
import pytest
from hypothesis import event, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from registry.model import ClusterState, Drain, Endpoint, Service
from resolver.geo import Locator
from resolver.respond import Options, Responder
from resolver.state import build
from resolver.zone import Zone
from tests.helpers import topology

T = TypeVar("T")
HEADER = struct.Struct("!HHHHHH")
QR, OPCODE_MASK, AA, TC, RD = 0x8000, 0x7800, 0x0400, 0x0200, 0x0100
RA, Z, AD = 0x0080, 0x0040, 0x0020
TYPE_OPT, TYPE_TSIG, TYPE_SIG = 41, 250, 24
NOERROR, FORMERR, NXDOMAIN, NOTIMP = 0, 1, 3, 4
ZONE = (b"global", b"example", b"com")
ZONE_NAME = dns.name.from_text("global.example.com")
NOW = 1_000_000
BULK = 10_000  # examples per run, split over the two main properties

# -- the server under test --------------------------------------------------------------

NS_V4 = tuple(f"192.0.2.{i}" for i in range(1, 41))  # 40 A records: 640 octets of answer
NS_V6 = tuple(f"2001:db8:53::{i:x}" for i in range(1, 61))  # 60 AAAA: more than 1232


def _service(namespace: str, name: str, addresses: list[str]) -> Service:
    return Service(
        namespace=namespace,
        name=name,
        endpoints=tuple(Endpoint(address=a) for a in addresses),
    )


def _cluster(name: str, region: str, n: int, *, drain: Drain | None = None) -> ClusterState:
    services = (
        _service("production", "api", [f"10.{n}.0.{i}" for i in (1, 2, 3)]),
        _service("production", "web", [f"2001:db8:{n}::{i:x}" for i in range(1, 13)]),
        _service(
            "staging",
            "big",
            [f"10.{n}.1.{i}" for i in range(1, 21)]
            + [f"2001:db8:{n}:1::{i:x}" for i in range(1, 21)],
        ),
        _service("payments", "db", [f"10.{n}.2.1"]),
    )
    return ClusterState(name=name, region=region, last_seen_ms=NOW, services=services, drain=drain)


@functools.cache
def responder() -> Responder:
    """The example topology, plus nameservers with many addresses so that answers grow
    past 512 and 1232 octets and truncation is exercised."""
    nameservers: dict[str, tuple[str, ...]] = {
        "ns1.global.example.com": ("127.0.0.1",),
        "ns2.global.example.com": NS_V4,
        "ns3.global.example.com": NS_V6,
        "ns-both.global.example.com": ("192.0.2.53", "2001:db8::53"),
    }
    for i in range(20):
        nameservers[f"ns{i}.provider-{i:02d}-with-a-rather-long-name.example.net"] = ()
    zone = Zone(name="global.example.com", ttl=5, negative_ttl=5, nameservers=nameservers)
    topo = topology()
    locator = Locator(((n.cidr, n.region) for n in topo.networks), topo.default_region)
    r = Responder(zone, locator, topo.regions, Options(ecs_trusted=("0.0.0.0/0", "::/0")))
    clusters = [
        _cluster("us-east-prod", "us-east-1", 1),
        _cluster("eu-west-prod", "eu-west-1", 2),
        _cluster("ap-south-prod", "ap-south-1", 3, drain=Drain()),
    ]
    r.swap(build(clusters, generation=42, sync_ms=NOW, lease_ttl_ms=6000))
    return r


# -- an independent reading of the query ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Edns:
    udp_size: int
    version: int
    do: bool


@dataclass(frozen=True, slots=True)
class Facts:
    """What the invariants need to know about a query (which was not QR=1 nor a runt)."""

    ident: int
    flags: int
    question: bytes | None
    """The question section as sent, when QDCOUNT=1 and it parsed."""
    labels: tuple[bytes, ...] | None
    qclass: int | None
    opt: Edns | None
    """The first OPT, when it was reached and is parseable (see the module docstring)."""
    opt_malformed: bool
    """The first OPT was reached but is not parseable: the answer must be FORMERR."""
    valid: bool
    """QUERY, QDCOUNT=1, and every record and byte where it may be: no syntax FORMERR."""

    @property
    def in_zone(self) -> bool:
        return self.labels is not None and self.labels[len(self.labels) - 3 :] == ZONE


def _read_question(data: bytes) -> tuple[tuple[bytes, ...], int] | None:
    labels: list[bytes] = []
    pos, total = 12, 1
    while pos < len(data):
        n = data[pos]
        if n == 0:
            end = pos + 1 + 4
            return (tuple(labels), end) if end <= len(data) else None
        if n > 63:
            return None
        total += n + 1
        if total > 255 or pos + 1 + n > len(data):
            return None
        labels.append(data[pos + 1 : pos + 1 + n].lower())  # bytes.lower(): ASCII only
        pos += 1 + n
    return None


def _skip_owner(data: bytes, pos: int) -> int | None:
    total = 1
    while pos < len(data):
        n = data[pos]
        if n == 0:
            return pos + 1
        if n >= 0xC0:
            return pos + 2 if pos + 2 <= len(data) else None
        if n > 63:
            return None
        total += n + 1
        if total > 255:
            return None
        pos += 1 + n
    return None


def _options_ok(rdata: bytes) -> bool:
    pos = 0
    while pos < len(rdata):
        if pos + 4 > len(rdata):
            return False
        (length,) = struct.unpack_from("!H", rdata, pos + 2)
        pos += 4 + length
        if pos > len(rdata):
            return False
    return True


def inspect(data: bytes) -> Facts | None:
    """None when the server must stay silent: shorter than a header, or a response."""
    if len(data) < 12:
        return None
    ident, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    if flags & QR:
        return None
    question = labels = qclass = None
    pos = 12
    if qdcount == 1 and (read := _read_question(data)) is not None:
        labels, pos = read
        question = data[12:pos]
        (qclass,) = struct.unpack_from("!H", data, pos - 2)
    opt: Edns | None = None
    malformed = complete = False
    opcode = (flags & OPCODE_MASK) >> 11
    if (
        opcode == 0
        and ancount == nscount == 0
        and arcount <= 2
        and (qdcount == 0 or question is not None)
    ):
        complete = True
        for index in range(arcount):
            start = _skip_owner(data, pos)
            if start is None or start + 10 > len(data):
                complete = False
                break
            rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", data, start)
            after = start + 10 + rdlen
            if rtype == TYPE_OPT:
                if opt is not None:  # a second OPT: FORMERR, the first one stands
                    complete = False
                    break
                if after > len(data) or data[pos] != 0 or not _options_ok(data[start + 10 : after]):
                    malformed = True
                    complete = False
                    break
                opt = Edns(rclass, (ttl >> 16) & 0xFF, bool(ttl & 0x8000))
            elif after > len(data) or not (
                rtype == TYPE_SIG or (rtype == TYPE_TSIG and index == arcount - 1)
            ):
                complete = False
                break
            pos = after
    valid = complete and question is not None and pos == len(data)
    return Facts(ident, flags, question, labels, qclass, opt, malformed, valid)


# -- the invariants ---------------------------------------------------------------------


def say(text: str) -> None:
    """Shown with a failing example (a hex packet to paste into a bug report)."""
    if currently_in_test_context():
        note(text)


def check(data: bytes, client: str) -> None:
    say(f"query {data.hex()} from {client}")
    r = responder()
    facts = inspect(data)
    errors = r.stats["internal_error"]
    udp = r.handle(data, client, tcp=False)
    tcp = r.handle(data, client, tcp=True)
    if r.stats["internal_error"] != errors:
        trace = getattr(r, "last_error", None) or ""
        raise AssertionError(f"an internal error was answered as SERVFAIL\n{trace}")
    if facts is None:
        assert udp is None and tcp is None
        return
    assert isinstance(udp, bytes) and isinstance(tcp, bytes)
    say(f"udp response {udp.hex()}")
    say(f"tcp response {tcp.hex()}")
    limit = 512 if facts.opt is None else max(512, min(facts.opt.udp_size, 1232))
    for response, over_tcp in ((udp, False), (tcp, True)):
        # Every response decodes (TSIG not validated: a BADKEY answer is unsigned).
        reply = dns.message.from_wire(response, keyring=False)
        _check_response(facts, response, reply, over_tcp, limit)
    _, udp_flags, _, udp_answers, _, _ = HEADER.unpack_from(udp)
    _, tcp_flags, _, tcp_answers, _, _ = HEADER.unpack_from(tcp)
    assert not tcp_flags & TC
    if udp_flags & TC:  # truncated only when the full response does not fit
        assert len(tcp) > limit
    else:  # and otherwise whole (TCP may add edns-tcp-keepalive, so compare answers)
        assert udp_answers == tcp_answers


def _check_response(
    facts: Facts, response: bytes, reply: dns.message.Message, over_tcp: bool, limit: int
) -> None:
    ident, flags, qdcount, ancount, _, _ = HEADER.unpack_from(response)
    rcode = reply.rcode()
    has_opt = reply.edns >= 0
    if currently_in_test_context():
        event(f"rcode {dns.rcode.to_text(rcode)}; opt {has_opt}; tc {bool(flags & TC)}")

    assert ident == facts.ident
    assert flags & QR
    assert not flags & (RA | Z | AD)
    assert flags & OPCODE_MASK == facts.flags & OPCODE_MASK
    if not over_tcp:
        assert len(response) <= limit
    if flags & TC:
        assert ancount == 0 and not reply.answer

    if facts.opt_malformed:
        assert rcode == FORMERR  # with or without an OPT: not judged
    else:
        assert has_opt == (facts.opt is not None)
        if facts.opt is not None:
            assert bool(reply.ednsflags & dns.flags.DO) == facts.opt.do
    if has_opt:
        assert reply.edns == 0

    if facts.question is not None and rcode != NOTIMP:
        assert qdcount == 1
        assert response[12 : 12 + len(facts.question)] == facts.question

    for rrset in reply.answer:
        assert rrset.name.is_subdomain(ZONE_NAME)

    authoritative = bool(flags & AA)
    answerable = facts.in_zone and rcode in (NOERROR, NXDOMAIN)
    if authoritative:
        assert answerable
    if facts.valid and facts.qclass == 1:
        assert authoritative == answerable


# -- generating queries -----------------------------------------------------------------
#
# Strategies are built once, here: building them inside a composite costs more than the
# draws themselves, and 10,000 examples must run in well under a minute.


def labels_of(name: str) -> tuple[bytes, ...]:
    return tuple(p.encode() for p in name.split(".") if p)


def encode_name(labels: tuple[bytes, ...]) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


EXISTING = [
    labels_of(n)
    for n in (
        "api.production.global.example.com",
        "web.production.global.example.com",  # AAAA only, 12 per region
        "big.staging.global.example.com",  # 20 A and 20 AAAA per region
        "db.payments.global.example.com",
        "global.example.com",
        "ns1.global.example.com",
        "ns2.global.example.com",  # 40 A
        "ns3.global.example.com",  # 60 AAAA
        "ns-both.global.example.com",
    )
]
NAMES = [
    *EXISTING,
    *EXISTING,
    *(
        labels_of(n)
        for n in (
            "production.global.example.com",  # empty non-terminals
            "staging.global.example.com",
            "nope.global.example.com",
            "nope.production.global.example.com",
            "a.b.nope.global.example.com",
            "x.api.production.global.example.com",
            "a.b.c.d.e.f.g.h.i.j.api.production.global.example.com",
            "example.com",
            "com",
            "",
            "www.example.org",
            "global.example.com.evil.example.net",
            "xglobal.example.com",
            "version.bind",
            "id.server",
        )
    ),
    (b"api.production", *ZONE),  # a dot inside one label
    (b"api", b"production\x00", *ZONE),
]
SUFFIXES = [ZONE, EXISTING[0], ()]


def _mixed_case(labels: tuple[bytes, ...], mask: int) -> tuple[bytes, ...]:
    out, bit = [], 0
    for label in labels:
        chars = bytearray(label)
        for i, c in enumerate(chars):
            if 0x61 <= c <= 0x7A and mask >> (bit % 64) & 1:
                chars[i] = c - 0x20
            bit += 1
        out.append(bytes(chars))
    return tuple(out)


def _filled(suffix: tuple[bytes, ...], target: int, fill: bytes) -> tuple[bytes, ...]:
    """A name of wire length ``target`` (when it can be made), labels of up to 63."""
    remaining = target - len(encode_name(suffix))
    prefix: list[bytes] = []
    while remaining >= 2:
        n = min(63, remaining - 1)
        if remaining - (n + 1) == 1:
            n -= 1
        prefix.append(fill * n)
        remaining -= n + 1
    return (*prefix, *suffix)


KNOWN = st.sampled_from(NAMES)
ODD_NAMES = st.one_of(
    st.builds(_mixed_case, KNOWN, st.integers(0, 2**64 - 1)),
    st.builds(lambda label, name: (label, *name), st.binary(min_size=1, max_size=63), KNOWN),
    st.builds(
        lambda n, suffix: (b"l" * n, *suffix), st.integers(50, 63), st.sampled_from(SUFFIXES)
    ),
    st.builds(
        _filled,
        st.sampled_from(SUFFIXES),
        st.integers(240, 258),  # 256 and more: too long, FORMERR
        st.sampled_from([b"a", b"Z", b"-", b"\xff", b"0"]),
    ),
)
"""Mixed case, a binary label, a long label, or a name near (or past) 255 octets."""


class Bits:
    """Fields cut from one drawn integer.

    Hypothesis spends far more per draw than a handler call costs, so the many small
    fields of a header or an OPT come from one integer each: one choice to make and to
    shrink. Every field is 0, or its common value, when its bits are 0, so shrinking
    leads to the plainest query that still fails.
    """

    def __init__(self, value: int) -> None:
        self.value = value

    def take(self, bits: int) -> int:
        field = self.value & ((1 << bits) - 1)
        self.value >>= bits
        return field

    def rarely(self, bits: int) -> bool:
        """True one time in 2**bits."""
        return self.take(bits) == (1 << bits) - 1

    def pick(self, choices: list[T], bits: int) -> T:
        return choices[self.take(bits) % len(choices)]


def words(octets: int) -> st.SearchStrategy[int]:
    """Uniformly random bits (Hypothesis draws large integers mostly small)."""
    return st.binary(min_size=octets, max_size=octets).map(lambda b: int.from_bytes(b, "little"))


COMMON_TYPES = [
    1,
    1,
    1,
    28,
    28,
    28,
    255,
    2,
    6,
    15,
    16,
    33,
    5,
    0,
    41,
    249,
    250,
    251,
    252,
    253,
    254,
    666,
]
OTHER_CLASSES = [3, 4, 254, 255, 0, 2, 42, 65535]
UDP_SIZES = [1232, 0, 1, 100, 511, 512, 513, 700, 1000, 1231, 1232, 1233, 4096, 65535]
CLIENTS = [
    "127.0.0.1",
    "127.0.1.7",
    "127.0.2.1",
    "127.0.3.200",
    "::1",
    "2001:db8::5",
    "::ffff:127.0.2.1",
    "not-an-address",
]


def _flags(bits: Bits) -> int:
    """QR one time in 32, OPCODE QUERY seven times in eight, the other bits at random."""
    qr = QR if bits.rarely(5) else 0
    opcode = bits.take(7)
    opcode = 0 if opcode < 112 else opcode - 112
    mode, other = bits.take(2), bits.take(11)
    return qr | opcode << 11 | (RD, 0, other, other)[mode]


def _qtype(bits: Bits) -> int:
    if bits.take(2) != 3:
        return bits.pick(COMMON_TYPES, 8)
    return bits.take(16)


def _option(bits: Bits, body: bytes) -> bytes:
    """One EDNS option: ECS (valid or not), NSID, COOKIE, keepalive/padding/EDE, unknown."""
    kind = bits.take(3)
    if kind in (0, 1):  # ECS: valid mostly (RFC 7871), else odd in one way or another
        family = bits.pick([1, 2], 1)
        source = bits.pick([0, 8, 16, 20, 24, 32] if family == 1 else [0, 32, 48, 56, 64, 128], 3)
        if bits.rarely(3):
            family = bits.take(16)
        if bits.rarely(3):
            source = bits.take(8)
        scope = bits.take(8) if bits.rarely(3) else 0
        if not bits.rarely(3):  # the address cut to the prefix and zero-padded
            octets = (source + 7) // 8
            cut = bytearray(body[:octets].ljust(octets, b"\x00"))
            if source % 8 and cut:
                cut[-1] &= (0xFF << (8 - source % 8)) & 0xFF
            body = bytes(cut)
        code, data = 8, struct.pack("!HBB", family, source, scope) + body[:17]
    elif kind == 2:
        code, data = 3, body[: bits.take(1) * 4]  # NSID, mostly empty
    elif kind in (3, 4):  # COOKIE: 8, 16-40 or any length up to 48
        length = bits.pick([8, 8, 16, 24, 40, 8, 16, 32], 3)
        if bits.rarely(2):
            length = bits.pick([0, 5, 7, 9, 15, 41, 48], 3)
        code, data = 10, body.ljust(48, b"\x01")[:length]
    elif kind == 5:
        code, data = bits.pick([11, 12, 15], 2), body[: bits.take(3)]
    else:
        code, data = bits.take(16), body[:20]
    return struct.pack("!HH", code, len(data)) + data


def _opt_record(word: int, body: bytes) -> bytes:
    """An OPT record with up to three options (their data cut from ``body``)."""
    bits = Bits(word)
    owner = b"\x00" if not bits.rarely(4) else bits.pick([b"\xc0\x0c", b"\x01x\x00"], 1)
    udp = bits.pick(UDP_SIZES, 4) if bits.take(1) == 0 else bits.take(16)
    ext_rcode = bits.take(8) if bits.rarely(2) else 0
    version = bits.take(8) if bits.rarely(3) else 0
    do = bits.take(1)
    z = bits.take(15) if bits.rarely(2) else 0
    count = bits.pick([0, 0, 1, 1, 1, 2, 2, 3], 3)
    rdata = b"".join(_option(Bits(bits.take(32)), body[i * 16 :]) for i in range(count))
    if bits.rarely(4):  # an option list that does not end where the record does
        junk = bits.take(32).to_bytes(4, "big")
        rdata += junk[: bits.take(2) + 1] if bits.take(1) else junk[:2] + b"\x00\xff"
    ttl = ext_rcode << 24 | version << 16 | do << 15 | z
    return owner + struct.pack("!HHIH", TYPE_OPT, udp, ttl, len(rdata)) + rdata


def _other_record(word: int, body: bytes) -> bytes:
    """A TSIG (well-formed or not), a SIG(0), or a record that has no place in a query."""
    bits = Bits(word)
    owner = bits.pick([b"\x03key\x00", b"\x03key\x00", b"\xc0\x0c", b"\x00"], 2)
    rtype = bits.pick([TYPE_TSIG, TYPE_TSIG, TYPE_SIG, 1, 16], 3)
    rdata = body[:24]
    if rtype == TYPE_TSIG and bits.take(1) == 0:
        algorithm = bits.pick(["hmac-sha256", "hmac-md5.sig-alg.reg.int"], 1)
        mac = body[: bits.take(6) % 33]
        rdata = (
            encode_name(labels_of(algorithm))
            + body.ljust(6, b"\x00")[:6]  # time signed
            + struct.pack("!HH", 300, len(mac))
            + mac
            + struct.pack("!HHH", bits.take(16), 0, 0)
        )
    return owner + struct.pack("!HHIH", rtype, 255, 0, len(rdata)) + rdata


OPT = st.builds(_opt_record, words(26), st.binary(max_size=64))
OTHER = st.builds(_other_record, words(2), st.binary(max_size=32))


@st.composite
def queries(draw: st.DrawFn) -> bytes:
    """A well-formed query, except where a name or an OPT is drawn at or past a limit:
    one OPT three times in five, sometimes a second one, sometimes a TSIG, SIG(0) or a
    record that has no place in a query."""
    bits = Bits(draw(words(9)))
    ident, flags, qtype = bits.take(16), _flags(bits), _qtype(bits)
    qclass = 1 if bits.take(3) else bits.pick([1, *OTHER_CLASSES], 4)
    qname = draw(ODD_NAMES) if bits.rarely(2) else draw(KNOWN)
    question = encode_name(qname) + struct.pack("!HH", qtype, qclass)
    opt = draw(OPT) if bits.take(3) >= 3 else None
    second = draw(OPT) if opt is not None and bits.rarely(4) else None
    other = draw(OTHER) if bits.rarely(4) else None
    records = [r for r in (opt, second) if r is not None]
    if other is not None:
        records.insert(len(records) * bits.take(1), other)
    head = HEADER.pack(ident, flags, 1, 0, 0, len(records))
    return head + question + b"".join(records)


QUERIES = queries()


def _mutate(data: bytes, word: int) -> bytes:
    """One to four times: truncate, flip a byte, append garbage, patch a count or delete a
    few bytes. Positions are fractions of the current length."""
    out = bytearray(data)
    outer = Bits(word)
    for _ in range(outer.take(2) + 1):
        bits = Bits(outer.take(64))
        kind = bits.take(3) % 5
        at = bits.take(16) * len(out) // 0x10000
        if kind == 0:  # mostly past the header (shorter ones are dropped, and dull)
            del out[at if bits.rarely(2) else max(at, 12) :]
        elif kind == 1 and out:
            out[at] ^= bits.take(8) or 0xFF
        elif kind == 2:
            out += bits.take(32).to_bytes(4, "big")[: bits.take(2) + 1] * (bits.take(3) + 1)
        elif kind == 3 and len(out) >= 12:
            field = 4 + 2 * bits.take(2)
            count = bits.pick([0, 1, 2, 3, 0xFFFF], 3) if bits.take(1) else bits.take(16)
            out[field : field + 2] = count.to_bytes(2, "big")
        elif kind == 4:
            del out[at : at + bits.take(3) + 1]
    return bytes(out)


MUTATED = st.builds(_mutate, QUERIES, words(33))


# -- the properties ---------------------------------------------------------------------

PROPERTY = settings(max_examples=BULK // 2, deadline=None, database=None, derandomize=False)


@PROPERTY
@given(data=QUERIES, client=st.sampled_from(CLIENTS))
def test_valid_queries_keep_the_invariants(data: bytes, client: str) -> None:
    check(data, client)


@PROPERTY
@given(data=MUTATED, client=st.sampled_from(CLIENTS))
def test_mutated_queries_keep_the_invariants(data: bytes, client: str) -> None:
    check(data, client)


@settings(max_examples=1000, deadline=None, database=None)
@given(data=st.binary(max_size=600), client=st.sampled_from(CLIENTS))
def test_arbitrary_bytes_keep_the_invariants(data: bytes, client: str) -> None:
    check(data, client)


def query(name: str, qtype: int, opt: bytes = b"") -> bytes:
    question = encode_name(labels_of(name)) + struct.pack("!HH", qtype, 1)
    return HEADER.pack(0x1234, RD, 1, 0, 0, 1 if opt else 0) + question + opt


@pytest.mark.parametrize(
    ("name", "qtype", "udp_size", "truncated"),
    [
        ("ns2.global.example.com", 1, None, True),  # 40 A records: 687 octets
        ("ns2.global.example.com", 1, 700, False),
        ("ns2.global.example.com", 1, 600, True),
        ("ns3.global.example.com", 28, 65535, True),  # 60 AAAA records: more than 1232
        ("ns1.global.example.com", 1, None, False),
    ],
)
def test_the_zone_here_makes_udp_answers_truncate(
    name: str, qtype: int, udp_size: int | None, truncated: bool
) -> None:
    """So that the truncation invariants are not checked only on small answers."""
    opt = b"" if udp_size is None else b"\x00" + struct.pack("!HHIH", TYPE_OPT, udp_size, 0, 0)
    data = query(name, qtype, opt)
    check(data, "127.0.0.1")
    response = responder().handle(data, "127.0.0.1")
    assert response is not None
    assert bool(HEADER.unpack_from(response)[1] & TC) == truncated


EXPLAIN_TXT = "085f6578706c61696e"  # the label _explain; the type TXT is 0010


@pytest.mark.parametrize(
    "packet",
    [
        # From the conformance checklist (section 3 of the notes), ID 0x1234.
        pytest.param("12347ff00000000000000000", id="opcode-15-every-flag"),
        pytest.param("123400000000000000000000", id="qdcount-0"),
        pytest.param("12340000000000000000000100002904d0000000000000", id="qdcount-0-opt"),
        pytest.param("123400000001000000000000", id="header-only"),
        pytest.param("1234000000", id="runt"),
        pytest.param("123400000001000000000000c00c00010001", id="pointer-to-itself"),
        pytest.param("123400000001000000000000c00200010001", id="pointer-into-header"),
        pytest.param("12340000000100000000000041610000010001", id="label-type-0x40"),
        pytest.param(
            "12340000000100000000000100000100010000010100010000000000050003fffefd",
            id="caa-with-bad-utf8",
        ),
        # Found by the properties above.
        pytest.param(
            "123400000001000100000000036170690a70726f64756374696f6e06676c6f62616c07"
            "6578616d706c6503636f6d0000010001",
            id="ancount-1-question-not-echoed",
        ),
        pytest.param(
            f"123400000001000000000000{EXPLAIN_TXT}076578616d706c6503636f6d0000100001",
            id="explain-outside-the-zone",
        ),
        pytest.param(f"123400000001000000000000{EXPLAIN_TXT}0000100001", id="explain-root"),
        pytest.param(
            f"123400000001000000000000{EXPLAIN_TXT}3f{'ff' * 63}06676c6f62616c07"
            "6578616d706c6503636f6d0000100001",
            id="explain-binary-label",
        ),
    ],
)
def test_checklist_and_regression_packets(packet: str) -> None:
    check(bytes.fromhex(packet), "127.0.0.1")
