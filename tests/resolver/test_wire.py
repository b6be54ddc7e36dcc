"""The cheap parser classifies every packet before any expensive work."""

from __future__ import annotations

import pytest

from resolver import wire

QNAME = b"\x03api\x0aproduction\x06global\x07example\x03com\x00"
Q = QNAME + b"\x00\x01\x00\x01"


def header(flags: int = 0, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return wire.HEADER.pack(0x1234, flags, qd, an, ns, ar)


def opt(udp: int = 1232, ttl: int = 0, rdata: bytes = b"") -> bytes:
    return (
        b"\x00\x00\x29"
        + udp.to_bytes(2, "big")
        + ttl.to_bytes(4, "big")
        + len(rdata).to_bytes(2, "big")
        + rdata
    )


def test_plain_query() -> None:
    parsed = wire.parse(header(wire.RD) + Q)
    assert isinstance(parsed, wire.Query)
    assert parsed.labels == (b"api", b"production", b"global", b"example", b"com")
    assert (parsed.qtype, parsed.qclass, parsed.rd, parsed.opt) == (1, 1, True, None)
    assert parsed.question == Q


def test_case_is_folded_for_lookup_but_kept_in_the_question() -> None:
    mixed = Q.replace(b"api", b"ApI")
    parsed = wire.parse(header() + mixed)
    assert isinstance(parsed, wire.Query)
    assert parsed.labels[0] == b"api"
    assert parsed.question == mixed


def test_opt_is_read() -> None:
    parsed = wire.parse(header(ar=1) + Q + opt(4096, 0x8000, b"\x00\x03\x00\x00"))
    assert isinstance(parsed, wire.Query)
    assert parsed.opt == wire.Opt(4096, 0, 0, True, ((3, b""),), nsid=True)


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (b"\x12\x34\x00", "shorter than a DNS header"),
        (header(wire.QR) + Q, "a response"),
    ],
)
def test_dropped(packet: bytes, reason: str) -> None:
    parsed = wire.parse(packet)
    assert isinstance(parsed, wire.Dropped)
    assert reason in parsed.reason


@pytest.mark.parametrize(
    ("packet", "rcode", "reason"),
    [
        (header(1 << 11) + Q, wire.NOTIMP, "opcode 1"),
        (header(qd=0), wire.FORMERR, "QDCOUNT is 0"),
        (header(qd=2) + Q + Q, wire.FORMERR, "QDCOUNT is 2"),
        (header(), wire.FORMERR, "runs past the end"),
        (header() + QNAME, wire.FORMERR, "type and class are missing"),
        (header() + b"\xc0\x0c\x00\x01\x00\x01", wire.FORMERR, "compressed"),
        (header() + b"\x41a\x00\x00\x01\x00\x01", wire.FORMERR, "extended label"),
        (
            header()
            + b"\x3f"
            + b"a" * 63
            + b"\x3f"
            + b"a" * 63
            + b"\x3f"
            + b"a" * 63
            + b"\x3f"
            + b"a" * 63
            + b"\x00\x00\x01\x00\x01",
            wire.FORMERR,
            "longer than 255",
        ),
        (header() + Q + b"\xde\xad", wire.FORMERR, "trailing bytes"),
        (header(an=1) + Q, wire.FORMERR, "unexpected records"),
        (header(ar=3) + Q, wire.FORMERR, "unexpected records"),
        (header(ar=1) + Q, wire.FORMERR, "additional record is malformed"),
        (header(ar=2) + Q + opt() + opt(), wire.FORMERR, "more than one OPT"),
        (header(ar=1) + Q + b"\x01x\x00" + opt()[1:], wire.FORMERR, "OPT owner is not the root"),
        (header(ar=1) + Q + opt(rdata=b"\x00\x03\x00\x09"), wire.FORMERR, "option runs past"),
    ],
)
def test_rejected(packet: bytes, rcode: int, reason: str) -> None:
    parsed = wire.parse(packet)
    assert isinstance(parsed, wire.Rejected), parsed
    assert parsed.rcode == rcode
    assert reason in parsed.reason
