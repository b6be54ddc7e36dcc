"""Reading a DNS query from raw bytes, cheaply and defensively.

Only what an authoritative server needs is parsed: the header, the one question, the OPT
record (with the options we act on: client subnet, NSID, cookie, TCP keepalive) and a
TSIG record, if any, so that it can be refused properly. Everything is checked on the way
(label types, name length, counts, record bounds, option syntax, trailing bytes), so a
query either parses into a :class:`Query` or is classified as something to FORMERR,
NOTIMP or drop — before any expensive work. A query with answer or authority records,
or more than two additional records, is refused here: a full parse of such a packet
costs 200 times a normal one (see the conformance notes).

Nothing here raises on bad input: every outcome is a value.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

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
TYPE_TSIG = 250
TYPE_SIG = 24
MAX_NAME_WIRE = 255

OPTION_NSID = 3
OPTION_ECS = 8
OPTION_COOKIE = 10
OPTION_KEEPALIVE = 11
OPTION_EDE = 15

FORMERR = 1
NOTIMP = 4
NOTAUTH = 9

_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True, slots=True)
class ClientSubnet:
    """An EDNS Client Subnet option (RFC 7871), validated."""

    family: int
    source: int
    address: str
    """The subnet's address, zero-padded to a full address."""
    raw: bytes
    """FAMILY, SOURCE and ADDRESS as sent, echoed back with our SCOPE."""


@dataclass(frozen=True, slots=True)
class Opt:
    udp_size: int
    ext_rcode: int
    version: int
    do: bool
    options: tuple[tuple[int, bytes], ...] = ()
    subnet: ClientSubnet | None = None
    cookie: bytes | None = None
    """The client cookie (8 octets) and the server cookie it sent back, if any."""
    nsid: bool = False
    keepalive: bool = False


@dataclass(frozen=True, slots=True)
class Tsig:
    """A TSIG record from the query: enough to say BADKEY in the form RFC 8945 asks."""

    owner: bytes
    algorithm: bytes
    time_signed: bytes
    fudge: int


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
    tsig: Tsig | None = None

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
    opt: Opt | None = None


@dataclass(frozen=True, slots=True)
class Dropped:
    reason: str


Parsed = Query | Rejected | Dropped

# An OPT that could not be read still gets an OPT in the FORMERR (RFC 6891 section 7).
_BARE_OPT = Opt(udp_size=512, ext_rcode=0, version=0, do=False)


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
    """The offset after a possibly compressed name (a pointer ends it), or None."""
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


def _subnet(data: bytes) -> ClientSubnet | str:
    if len(data) < 4:
        return "client subnet option is too short"
    family, source, scope = struct.unpack_from("!HBB", data)
    width = {1: 32, 2: 128}.get(family)
    if width is None:
        return f"client subnet family {family} is unknown"
    if source > width:
        return f"client subnet prefix /{source} is too long for family {family}"
    if scope != 0:
        return "client subnet SCOPE must be 0 in a query"
    address = data[4:]
    if len(address) != (source + 7) // 8:
        return f"client subnet /{source} needs {(source + 7) // 8} address octets"
    if source % 8 and address[-1] & (0xFF >> (source % 8)):
        return "client subnet address has bits set past its prefix"
    padded = address + bytes(width // 8 - len(address))
    text = str(ipaddress.ip_address(padded))
    return ClientSubnet(family, source, text, data[:2] + data[2:3] + address)


def _opt(ttl: int, rclass: int, rdata: bytes) -> Opt | str:
    options = []
    subnet: ClientSubnet | None = None
    cookie: bytes | None = None
    nsid = keepalive = False
    pos = 0
    while pos < len(rdata):
        if pos + 4 > len(rdata):
            return "OPT option header runs past its record"
        code, length = struct.unpack_from("!HH", rdata, pos)
        pos += 4
        if pos + length > len(rdata):
            return "OPT option runs past its record"
        value = rdata[pos : pos + length]
        pos += length
        options.append((code, value))
        if code == OPTION_ECS:
            if subnet is not None:
                return "more than one client subnet option"
            parsed = _subnet(value)
            if isinstance(parsed, str):
                return parsed
            subnet = parsed
        elif code == OPTION_COOKIE:
            if not (length == 8 or 16 <= length <= 40):
                return f"a cookie of {length} octets (RFC 7873: 8, or 16 to 40)"
            cookie = value
        elif code == OPTION_NSID:
            nsid = True
        elif code == OPTION_KEEPALIVE:
            keepalive = True
    return Opt(
        udp_size=rclass,
        ext_rcode=ttl >> 24,
        version=(ttl >> 16) & 0xFF,
        do=bool(ttl & 0x8000),
        options=tuple(options),
        subnet=subnet,
        cookie=cookie,
        nsid=nsid,
        keepalive=keepalive,
    )


def _tsig(data: bytes, owner_at: int, rdata: bytes) -> Tsig | str:
    owner_end = _skip_name(data, owner_at)
    if owner_end is None or data[owner_end - 1] != 0:
        return "TSIG owner name is malformed or compressed"
    algorithm_end = _skip_name(rdata, 0)
    if algorithm_end is None or rdata[algorithm_end - 1] != 0 or algorithm_end + 10 > len(rdata):
        return "TSIG record is malformed"
    time_signed = rdata[algorithm_end : algorithm_end + 6]
    (fudge,) = struct.unpack_from("!H", rdata, algorithm_end + 6)
    return Tsig(data[owner_at:owner_end], rdata[:algorithm_end], time_signed, fudge)


@dataclass(frozen=True, slots=True)
class _Additional:
    opt: Opt | None = None
    tsig: Tsig | None = None
    end: int = 0
    error: str | None = None


def _additional(data: bytes, offset: int, count: int) -> _Additional:
    """OPT and TSIG from the additional section and the offset after it, or why not."""
    opt: Opt | None = None
    tsig: Tsig | None = None
    for index in range(count):
        start = _skip_name(data, offset)
        if start is None or start + RR_FIXED.size > len(data):
            return _Additional(opt, error="additional record is malformed")
        rtype, rclass, ttl, rdlen = RR_FIXED.unpack_from(data, start)
        rdata_at = start + RR_FIXED.size
        if rdata_at + rdlen > len(data):
            bare = opt or (_BARE_OPT if rtype == TYPE_OPT else None)
            return _Additional(bare, error="record data runs past the end")
        rdata = data[rdata_at : rdata_at + rdlen]
        if rtype == TYPE_OPT:
            if opt is not None:
                return _Additional(opt, error="more than one OPT record")
            if data[offset] != 0 or start != offset + 1:
                return _Additional(_BARE_OPT, error="OPT owner is not the root")
            decoded = _opt(ttl, rclass, rdata)
            if isinstance(decoded, str):
                return _Additional(Opt(512, 0, 0, bool(ttl & 0x8000)), error=decoded)
            opt = decoded
        elif rtype == TYPE_TSIG:
            if index != count - 1:
                return _Additional(opt, error="TSIG is not the last record")
            signed = _tsig(data, offset, rdata)
            if isinstance(signed, str):
                return _Additional(opt, error=signed)
            tsig = signed
        elif rtype != TYPE_SIG:
            return _Additional(opt, error=f"a record of type {rtype} has no place in a query")
        offset = rdata_at + rdlen
    return _Additional(opt, tsig, offset)


def parse(data: bytes) -> Parsed:
    if len(data) < HEADER.size:
        return Dropped("shorter than a DNS header")
    ident, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    if flags & QR:
        return Dropped("a response, not a query")
    opcode = (flags >> 11) & 0xF
    if opcode != OPCODE_QUERY:
        return Rejected(ident, flags, NOTIMP, f"opcode {opcode} not implemented")
    if qdcount == 0:
        if ancount or nscount or arcount > 2:
            return Rejected(ident, flags, FORMERR, "unexpected records in a query")
        # Still read the OPT, so the FORMERR carries one (RFC 6891 section 7).
        extra = _additional(data, HEADER.size, arcount)
        return Rejected(ident, flags, FORMERR, "QDCOUNT is 0", opt=extra.opt)
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
    if ancount or nscount or arcount > 2:
        # Refused before the records are read: their count alone makes it no query.
        return Rejected(ident, flags, FORMERR, "unexpected records in a query", question)
    extra = _additional(data, offset + 4, arcount)
    if extra.error is not None:
        return Rejected(ident, flags, FORMERR, extra.error, question, extra.opt)
    if extra.end != len(data):
        reason = "trailing bytes after the message"
        return Rejected(ident, flags, FORMERR, reason, question, extra.opt)
    return Query(ident, flags, question, labels, qtype, qclass, extra.opt, extra.tsig)
