"""Which TCP connections the DNS server admits, and whose it closes to make room.

A cap per source alone is not fairness: issue #10 filled the global cap (1,024) from 32
addresses holding 32 connections each, and every other client was refused. So when the
server is full, a newcomer takes a connection from the source holding the most, as long
as that source holds at least two more than the newcomer would: under pressure every
source converges on an equal share, and a source can only ever be refused by sources no
larger than itself (RFC 7766, section 6.2.3: under pressure, close connections rather
than refuse). A source is one IPv4 address, or one IPv6 /64 — the block a single host
is given, so a client cannot multiply itself by picking addresses from it.

Pure: the server (:mod:`resolver.server`) keeps the counts and closes what is chosen.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

IPV6_PREFIX = 64


def source_of(address: str) -> str:
    """The key connections are counted under: the address, or its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return address


@dataclass(frozen=True, slots=True)
class Admit:
    pass


@dataclass(frozen=True, slots=True)
class Evict:
    """Admit, after closing one connection of ``source`` (the one idle longest)."""

    source: str


@dataclass(frozen=True, slots=True)
class Refuse:
    why: str
    """``per_source``: this source is at its own cap; ``full``: no source holds more."""


Decision = Admit | Evict | Refuse


def admit(
    counts: Mapping[str, int], source: str, *, max_total: int, max_per_source: int
) -> Decision:
    """Whether a new connection from ``source`` comes in, given the open ``counts``."""
    mine = counts.get(source, 0)
    if mine >= max_per_source:
        return Refuse("per_source")
    if sum(counts.values()) < max_total:
        return Admit()
    largest, held = max(counts.items(), key=lambda item: (item[1], item[0]))
    if held >= mine + 2:
        return Evict(largest)
    return Refuse("full")
