"""Packing responses with dnslib, once per (name, type, location), not once per query.

A response is split into the part that depends on the query — ID, the RD and CD bits,
the question as sent (its case included), the OPT record — and the part that does not:
the flags we set, the record counts and every byte after the question. The second part
is packed here, with the question name lower-cased, and kept; the responder joins the two
per query. Compression pointers into the question stay valid because the question sent
and the lower-cased one have the same length and layout.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from dnslib import (
    AAAA,
    NS,
    QTYPE,
    RR,
    SOA,
    SRV,
    TXT,
    A,
    DNSHeader,
    DNSLabel,
    DNSQuestion,
    DNSRecord,
)

from resolver import wire

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16

TYPE_A = QTYPE.A
TYPE_AAAA = QTYPE.AAAA
TYPE_NS = QTYPE.NS
TYPE_SOA = QTYPE.SOA
TYPE_ANY = QTYPE.ANY

UDP_PAYLOAD = 1232


@dataclass(frozen=True, slots=True)
class Packed:
    flags: int
    """QR, AA and the rcode: the bits we decide (RD and CD are copied per query)."""
    ancount: int
    nscount: int
    arcount: int
    tail: bytes
    """Every byte after the question."""
    ede: int | None = None
    """Extended DNS Error (RFC 8914) to add when the query has an OPT."""


@dataclass(frozen=True, slots=True)
class SoaFields:
    mname: tuple[bytes, ...]
    rname: tuple[bytes, ...]
    serial: int
    refresh: int = 60
    retry: int = 30
    expire: int = 86400
    minimum: int = 5


def label(labels: Sequence[bytes]) -> DNSLabel:
    return DNSLabel(list(labels))


def a_or_aaaa(owner: Sequence[bytes], address: str, ttl: int) -> RR:
    if ipaddress.ip_address(address).version == 4:
        return RR(label(owner), TYPE_A, ttl=ttl, rdata=A(address))
    return RR(label(owner), TYPE_AAAA, ttl=ttl, rdata=AAAA(address))


def srv(owner: Sequence[bytes], port: int, target: Sequence[bytes], ttl: int) -> RR:
    return RR(label(owner), QTYPE.SRV, ttl=ttl, rdata=SRV(0, 100, port, label(target)))


def txt(owner: Sequence[bytes], strings: Sequence[str], ttl: int = 0) -> RR:
    return RR(label(owner), QTYPE.TXT, ttl=ttl, rdata=TXT([s.encode() for s in strings]))


def soa(zone: Sequence[bytes], fields: SoaFields) -> RR:
    times = (
        fields.serial & 0xFFFFFFFF,
        fields.refresh,
        fields.retry,
        fields.expire,
        fields.minimum,
    )
    rdata = SOA(label(fields.mname), label(fields.rname), times)
    # The SOA's own TTL is the negative-caching TTL too: min(TTL, MINIMUM) (RFC 2308).
    return RR(label(zone), TYPE_SOA, ttl=fields.minimum, rdata=rdata)


def ns(zone: Sequence[bytes], name: Sequence[bytes], ttl: int) -> RR:
    return RR(label(zone), TYPE_NS, ttl=ttl, rdata=NS(label(name)))


def pack(
    labels: Sequence[bytes],
    qtype: int,
    qclass: int,
    *,
    rcode: int = NOERROR,
    authoritative: bool = True,
    answers: Sequence[RR] = (),
    authority: Sequence[RR] = (),
    ede: int | None = None,
) -> Packed:
    record = DNSRecord(
        DNSHeader(id=0, qr=1, aa=int(authoritative), ra=0, rcode=rcode),
        q=DNSQuestion(label(labels), qtype, qclass),
    )
    for rr in answers:
        record.add_answer(rr)
    for rr in authority:
        record.add_auth(rr)
    data = record.pack()
    qlen = sum(len(part) + 1 for part in labels) + 1 + 4
    _, flags, _, an, ns_, ar = wire.HEADER.unpack_from(data)
    return Packed(flags & ~(wire.RD | wire.CD | wire.RA), an, ns_, ar, data[12 + qlen :], ede)


EDE_NOT_READY = 14
EDE_PROHIBITED = 18
EDE_NOT_AUTHORITATIVE = 20
EDE_NOT_SUPPORTED = 21


def option(code: int, value: bytes) -> bytes:
    return struct.pack("!HH", code, len(value)) + value


def opt_record(*, do: bool, ext_rcode: int = 0, options: bytes = b"") -> bytes:
    """Our OPT: version 0, our UDP payload size, DO echoed (RFC 6891, RFC 3225)."""
    ttl = (ext_rcode << 24) | (0x8000 if do else 0)
    return b"\x00" + struct.pack("!HHIH", wire.TYPE_OPT, UDP_PAYLOAD, ttl, len(options)) + options


def tsig_badkey(tsig: wire.Tsig, ident: int) -> bytes:
    """The unsigned TSIG record of a BADKEY answer (RFC 8945 section 5.3.2)."""
    rdata = (
        tsig.algorithm
        + tsig.time_signed
        + struct.pack("!HHHHH", tsig.fudge, 0, ident, BADKEY_TSIG, 0)
    )
    return tsig.owner + struct.pack("!HHIH", wire.TYPE_TSIG, 255, 0, len(rdata)) + rdata


BADKEY_TSIG = 17


def header(ident: int, flags: int, qd: int, an: int, ns_: int, ar: int) -> bytes:
    return wire.HEADER.pack(ident, flags, qd, an, ns_, ar)
