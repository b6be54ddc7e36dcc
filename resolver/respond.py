"""The one seam where bytes meet the pure pipeline: parse → locate → policy → pack.

:meth:`Responder.handle` takes a datagram (or a TCP message) and returns the bytes to send
back, or None to stay silent. It never raises: a malformed packet is FORMERR or silence,
and an unexpected error in our own code is a SERVFAIL for that one packet, counted.

Answers are decided once per (name, type, class) — and, for names whose answer depends
on where the client is, once per client region — then kept as pre-packed bytes until
the next snapshot swap. A query that hits that cache costs a header parse, a dict probe
and a join.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from registry.model import Region
from resolver import answers, policy, wire
from resolver.answers import (
    FORMERR,
    NOERROR,
    NOTIMP,
    NXDOMAIN,
    REFUSED,
    SERVFAIL,
    Packed,
    SoaFields,
)
from resolver.geo import Locator, region_order
from resolver.snapshot import EMPTY, Snapshot
from resolver.zone import Zone

CLASS_IN = 1
TYPE_IXFR, TYPE_AXFR, TYPE_MAILB, TYPE_MAILA = 251, 252, 253, 254
META_TYPES = {wire.TYPE_OPT, 249, 250}  # OPT, TKEY, TSIG: never asked for
MAX_CACHED_NAMES = 50_000


@dataclass(slots=True)
class Static:
    variants: tuple[Packed, ...]


@dataclass(slots=True)
class Located:
    """An answer that depends on the client's region: decided per region, lazily."""

    owner: str
    family: int
    labels: tuple[bytes, ...]
    qtype: int
    qclass: int
    by_region: dict[str | None, tuple[Packed, ...]] = field(default_factory=dict)


Entry = Static | Located


class Responder:
    def __init__(self, zone: Zone, locator: Locator, regions: Sequence[Region]) -> None:
        self.zone = zone
        self.locator = locator
        self.regions = tuple(regions)
        self.snapshot: Snapshot = EMPTY
        self.stats: Counter[str] = Counter()
        self._zone_labels = zone.labels
        self._cache: dict[tuple[tuple[bytes, ...], int, int], Entry] = {}
        self._orders: dict[str | None, tuple[str, ...]] = {}
        self._turn = itertools.count()

    def swap(self, snapshot: Snapshot) -> None:
        """Answer from ``snapshot`` from now on; every pre-packed answer is dropped."""
        self.snapshot = snapshot
        self._cache = {}

    # -- the hot path ------------------------------------------------------------------

    def handle(self, data: bytes, client: str, *, tcp: bool = False) -> bytes | None:
        try:
            return self._handle(data, client, tcp)
        except Exception:  # contain any fault to this one packet
            self.stats["internal_error"] += 1
            if len(data) < 12:
                return None
            ident, flags = int.from_bytes(data[:2], "big"), int.from_bytes(data[2:4], "big")
            return answers.header(ident, wire.QR | (flags & wire.RD) | SERVFAIL, 0, 0, 0, 0)

    def _handle(self, data: bytes, client: str, tcp: bool) -> bytes | None:
        parsed = wire.parse(data)
        if isinstance(parsed, wire.Dropped):
            self.stats["dropped"] += 1
            return None
        if isinstance(parsed, wire.Rejected):
            self.stats["formerr" if parsed.rcode == FORMERR else "notimp"] += 1
            return self._rejected(parsed)
        query = parsed
        if query.opt is not None and query.opt.version > 0:
            self.stats["badvers"] += 1
            return self._finish(query, answers.Packed(wire.QR, 0, 0, 0, b""), tcp, ext_rcode=1)
        key = (query.labels, query.qtype, query.qclass)
        entry = self._cache.get(key)
        if entry is None:
            entry = self._decide(*key)
            if len(self._cache) >= MAX_CACHED_NAMES:
                self._cache = {}
            self._cache[key] = entry
        if isinstance(entry, Static):
            variants = entry.variants
        else:
            region = self.locator.locate(client).region
            found = entry.by_region.get(region)
            if found is None:
                found = entry.by_region[region] = self._geo(entry, region)
            variants = found
        packed = variants[next(self._turn) % len(variants)] if len(variants) > 1 else variants[0]
        self.stats[_RCODE_NAMES.get(packed.flags & 0xF, "other")] += 1
        return self._finish(query, packed, tcp)

    def _finish(self, query: wire.Query, packed: Packed, tcp: bool, *, ext_rcode: int = 0) -> bytes:
        flags = packed.flags | (query.flags & (wire.RD | wire.CD))
        arcount = packed.arcount
        opt = b""
        if query.opt is not None:
            opt = answers.opt_record(do=query.opt.do, ext_rcode=ext_rcode)
            arcount += 1
        head = answers.header(query.id, flags, 1, packed.ancount, packed.nscount, arcount)
        message = head + query.question + packed.tail + opt
        if not tcp:
            limit = 512 if query.opt is None else min(max(512, query.opt.udp_size), 1232)
            if len(message) > limit:
                self.stats["truncated"] += 1
                head = answers.header(query.id, flags | wire.TC, 1, 0, 0, 1 if opt else 0)
                message = head + query.question + opt
        return message

    def _rejected(self, rejected: wire.Rejected) -> bytes:
        if rejected.rcode == NOTIMP:
            # Only the ID and the opcode survive; every other flag is cleared (as BIND).
            flags = wire.QR | (rejected.flags & 0x7800) | NOTIMP
            return answers.header(rejected.id, flags, 0, 0, 0, 0)
        flags = wire.QR | (rejected.flags & (wire.RD | wire.CD)) | rejected.rcode
        opt = answers.opt_record(do=rejected.opt.do) if rejected.opt is not None else b""
        qd = 1 if rejected.question else 0
        head = answers.header(rejected.id, flags, qd, 0, 0, 1 if opt else 0)
        return head + rejected.question + opt

    # -- deciding (on a cache miss) ----------------------------------------------------

    def _soa(self) -> SoaFields:
        return SoaFields(
            mname=self.zone.ns_names[0],
            rname=self.zone.rname,
            serial=self.snapshot.generation,
            minimum=self.zone.negative_ttl,
        )

    def _negative(self, labels: tuple[bytes, ...], qtype: int, qclass: int, rcode: int) -> Static:
        soa = answers.soa(self._zone_labels, self._soa())
        return Static((answers.pack(labels, qtype, qclass, rcode=rcode, authority=[soa]),))

    def _decide(self, labels: tuple[bytes, ...], qtype: int, qclass: int) -> Entry:
        zone = self._zone_labels
        depth = len(labels) - len(zone)
        if depth < 0 or labels[depth:] != zone or qclass != CLASS_IN:
            return Static(
                (answers.pack(labels, qtype, qclass, rcode=REFUSED, authoritative=False),)
            )
        if qtype in (TYPE_AXFR, TYPE_IXFR):
            return Static((answers.pack(labels, qtype, qclass, rcode=REFUSED),))
        if qtype in META_TYPES:
            return Static(
                (answers.pack(labels, qtype, qclass, rcode=FORMERR, authoritative=False),)
            )
        if qtype in (TYPE_MAILA, TYPE_MAILB):
            return Static((answers.pack(labels, qtype, qclass, rcode=NOTIMP, authoritative=False),))
        relative = labels[:depth]
        if not relative:
            return self._apex(labels, qtype, qclass)
        ns_addresses = self.zone.ns_addresses(relative)
        if ns_addresses is not None:
            records = [
                answers.a_or_aaaa(labels, a, self.zone.ttl)
                for a in ns_addresses
                if _family_matches(a, qtype)
            ]
            if records:
                return Static((answers.pack(labels, qtype, qclass, answers=records),))
            return self._negative(labels, qtype, qclass, NOERROR)
        owner = b".".join(relative).decode("latin-1")
        if owner in self.snapshot.services:
            family = {answers.TYPE_A: 4, answers.TYPE_AAAA: 6, answers.TYPE_ANY: 4}.get(qtype)
            if family is None:
                return self._negative(labels, qtype, qclass, NOERROR)
            return Located(owner, family, labels, qtype, qclass)
        if depth == 1 and relative[0].decode("latin-1") in self.snapshot.namespaces:
            return self._negative(labels, qtype, qclass, NOERROR)  # empty non-terminal
        return self._negative(labels, qtype, qclass, NXDOMAIN)

    def _apex(self, labels: tuple[bytes, ...], qtype: int, qclass: int) -> Static:
        if qtype in (answers.TYPE_SOA, answers.TYPE_ANY):
            soa = answers.soa(self._zone_labels, self._soa())
            return Static((answers.pack(labels, qtype, qclass, answers=[soa]),))
        if qtype == answers.TYPE_NS:
            records = [answers.ns(labels, name, self.zone.ttl) for name in self.zone.ns_names]
            return Static((answers.pack(labels, qtype, qclass, answers=records),))
        return self._negative(labels, qtype, qclass, NOERROR)

    def _order(self, region: str | None) -> tuple[str, ...]:
        order = self._orders.get(region)
        if order is None:
            order = self._orders[region] = region_order(region, self.regions)
        return order

    def _geo(self, entry: Located, region: str | None) -> tuple[Packed, ...]:
        service = self.snapshot.services[entry.owner]
        decision = policy.geo(service, entry.family, self._order(region))
        if not decision.addresses:
            return self._negative(entry.labels, entry.qtype, entry.qclass, NOERROR).variants
        return tuple(
            answers.pack(
                entry.labels,
                entry.qtype,
                entry.qclass,
                answers=[answers.a_or_aaaa(entry.labels, a, service.ttl) for a in rotation],
            )
            for rotation in policy.rotations(decision.addresses)
        )

    def decide(self, owner: str, family: int, region: str | None) -> policy.Decision | None:
        """The decision for a service as a client in ``region`` gets it (for explaining)."""
        service = self.snapshot.services.get(owner)
        if service is None:
            return None
        return policy.geo(service, family, self._order(region))


def _family_matches(address: str, qtype: int) -> bool:
    v6 = ":" in address
    return (qtype == answers.TYPE_AAAA) == v6 if qtype != answers.TYPE_ANY else not v6


_RCODE_NAMES = {
    NOERROR: "noerror",
    FORMERR: "formerr",
    SERVFAIL: "servfail",
    NXDOMAIN: "nxdomain",
    NOTIMP: "notimp",
    REFUSED: "refused",
}
