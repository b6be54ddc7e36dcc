"""Reading a DNS query from raw bytes, cheaply and defensively.

Only what an authoritative server needs is parsed: the header, the one question and the
OPT record. Everything is checked on the way (label types, name length, counts, record
bounds, trailing bytes), so a query either parses into a :class:`Query` or is classified
as something to refuse, FORMERR or drop — before any expensive work. A query with
answer or authority records, or more than two additional records, is refused here: a
full parse of such a packet costs 200 times a normal one (see the conformance notes).

Nothing here raises on bad input: every outcome is a value.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

HEADER = struct.Struct("!HHHHHH")
RR_FIXED = struct.Struct("!HHIH")

QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
RA = 0x0080
AD = 0x0020
CD = 0x0010

OPCODE_QUERY = 0
TYPE_OPT = 41
MAX_NAME_WIRE = 255


@dataclass(frozen=True, slots=True)
class Opt:
    udp_size: int
    ext_rcode: int
    version: int
    do: bool
    options: tuple[tuple[int, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Query:
    id: int
    flags: int
    question: bytes
    """The question section exactly as sent (name, type, class)."""
    labels: tuple[bytes, ...]
    """The question name's labels, lower-cased (ASCII only, as DNS compares names)."""
    qtype: int
    qclass: int
    opt: Opt | None = None

    @property
    def rd(self) -> bool:
        return bool(self.flags & RD)

    @property
    def cd(self) -> bool:
        return bool(self.flags & CD)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A packet answered without looking at its question: FORMERR or NOTIMP."""

    id: int
    flags: int
    rcode: int
    reason: str
    question: bytes = b""
    opt: Opt | None = field(default=None)


@dataclass(frozen=True, slots=True)
class Dropped:
    reason: str


Parsed = Query | Rejected | Dropped

FORMERR = 1
NOTIMP = 4

_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")


def _name(data: bytes, offset: int) -> tuple[tuple[bytes, ...], int] | str:
    """Labels of an uncompressed name at ``offset`` and the offset after it, or why not."""
    labels: list[bytes] = []
    total = 1
    end = len(data)
    while True:
        if offset >= end:
            return "name runs past the end"
        length = data[offset]
        if length == 0:
            return tuple(labels), offset + 1
        if length & 0xC0:
            return "compressed or extended label in the question"
        total += length + 1
        if total > MAX_NAME_WIRE:
            return "name longer than 255 octets"
        if offset + 1 + length > end:
            return "label runs past the end"
        labels.append(data[offset + 1 : offset + 1 + length].translate(_LOWER))
        offset += 1 + length


def _skip_name(data: bytes, offset: int) -> int | None:
    """The offset after a possibly compressed name (pointers end it), or None."""
    end = len(data)
    total = 1
    while offset < end:
        length = data[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:
            return offset + 2 if offset + 2 <= end else None
        if length & 0xC0:
            return None
        total += length + 1
        if total > MAX_NAME_WIRE:
            return None
        offset += 1 + length
    return None


def _opt(ttl: int, rclass: int, rdata: bytes) -> Opt | str:
    options = []
    pos = 0
    while pos < len(rdata):
        if pos + 4 > len(rdata):
            return "OPT option header runs past its record"
        code, length = struct.unpack_from("!HH", rdata, pos)
        pos += 4
        if pos + length > len(rdata):
            return "OPT option runs past its record"
        options.append((code, rdata[pos : pos + length]))
        pos += length
    return Opt(
        udp_size=rclass,
        ext_rcode=ttl >> 24,
        version=(ttl >> 16) & 0xFF,
        do=bool(ttl & 0x8000),
        options=tuple(options),
    )


def parse(data: bytes) -> Parsed:
    if len(data) < HEADER.size:
        return Dropped("shorter than a DNS header")
    ident, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    if flags & QR:
        return Dropped("a response, not a query")
    opcode = (flags >> 11) & 0xF
    if opcode != OPCODE_QUERY:
        return Rejected(ident, flags, NOTIMP, f"opcode {opcode} not implemented")
    if qdcount != 1:
        return Rejected(ident, flags, FORMERR, f"QDCOUNT is {qdcount}, not 1")
    parsed = _name(data, HEADER.size)
    if isinstance(parsed, str):
        return Rejected(ident, flags, FORMERR, parsed)
    labels, offset = parsed
    if offset + 4 > len(data):
        return Rejected(ident, flags, FORMERR, "question type and class are missing")
    qtype, qclass = struct.unpack_from("!HH", data, offset)
    question = data[HEADER.size : offset + 4]
    offset += 4
    if ancount or nscount or arcount > 2:
        return Rejected(ident, flags, FORMERR, "unexpected records in a query", question)
    opt: Opt | None = None
    for _ in range(arcount):
        start = _skip_name(data, offset)
        if start is None or start + RR_FIXED.size > len(data):
            return Rejected(ident, flags, FORMERR, "additional record is malformed", question, opt)
        rtype, rclass, ttl, rdlen = RR_FIXED.unpack_from(data, start)
        rdata_at = start + RR_FIXED.size
        if rdata_at + rdlen > len(data):
            return Rejected(ident, flags, FORMERR, "record data runs past the end", question, opt)
        if rtype == TYPE_OPT:
            if opt is not None:
                return Rejected(ident, flags, FORMERR, "more than one OPT record", question, opt)
            if data[offset] != 0 or start != offset + 1:
                return Rejected(ident, flags, FORMERR, "OPT owner is not the root", question)
            decoded = _opt(ttl, rclass, data[rdata_at : rdata_at + rdlen])
            if isinstance(decoded, str):
                # Answer FORMERR with an OPT, since the query did carry one (RFC 6891 §7).
                return Rejected(
                    ident, flags, FORMERR, decoded, question, Opt(512, 0, 0, bool(ttl & 0x8000))
                )
            opt = decoded
        offset = rdata_at + rdlen
    if offset != len(data):
        return Rejected(ident, flags, FORMERR, "trailing bytes after the message", question, opt)
    return Query(ident, flags, question, labels, qtype, qclass, opt)
