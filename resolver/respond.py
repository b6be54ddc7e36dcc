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

import hashlib
import hmac
import ipaddress
import itertools
import socket
import struct
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, overload

from registry.model import Region
from resolver import answers, policy, wire
from resolver import snapshot as snapshots
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
from resolver.geo import Location, Locator, region_order
from resolver.rrl import Action, RateLimiter, RrlConfig
from resolver.snapshot import Snapshot
from resolver.zone import Zone

CLASS_IN = 1
TYPE_IXFR, TYPE_AXFR, TYPE_MAILB, TYPE_MAILA = 251, 252, 253, 254
META_TYPES = {wire.TYPE_OPT, 249, 250}  # OPT, TKEY, TSIG: never asked for
MAX_CACHED_NAMES = 50_000
TYPE_TXT = 16
TYPE_SRV = 33
STICKY_V4, STICKY_V6 = 24, 56


@dataclass(slots=True)
class Static:
    variants: tuple[Packed, ...]


class Variants(Sequence[Packed]):
    """Answers packed on first use: a service of 1,000 endpoints has 125 of them, and
    packing them all at once would hold the event loop for several milliseconds."""

    __slots__ = ("_pack", "_packed")

    def __init__(self, count: int, pack: Callable[[int], Packed]) -> None:
        self._pack = pack
        self._packed: list[Packed | None] = [None] * count

    def __len__(self) -> int:
        return len(self._packed)

    @overload
    def __getitem__(self, index: int) -> Packed: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Packed]: ...
    def __getitem__(self, index: int | slice) -> Packed | Sequence[Packed]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        packed = self._packed[index]
        if packed is None:
            packed = self._packed[index] = self._pack(index % len(self._packed))
        return packed


@dataclass(frozen=True, slots=True)
class Choice:
    variants: Sequence[Packed]
    location_dependent: bool
    fallback: str | None = None
    """The all-unhealthy branch this answer comes from, counted per query when set."""


@dataclass(slots=True)
class Located:
    """An answer that depends on the client: decided per client bucket, lazily.

    The bucket is what the service's policy looks at — the client's region and cluster
    for geo, failover and residency, the subnet's weighted pick for weighted, nothing
    for all — so every client in a bucket gets the same pre-packed answers.
    """

    owner: str
    family: int
    labels: tuple[bytes, ...]
    qtype: int
    qclass: int
    pinned: str | None = None
    """``<cluster>.<service>.<namespace>``: only that cluster's endpoints."""
    srv: tuple[str, str] | None = None
    """``_<port>._<proto>.<service>.<namespace>`` SRV: the port's name and protocol."""
    by_bucket: dict[object, Choice] = field(default_factory=dict)


@dataclass(frozen=True)
class Options:
    """How the responder treats EDNS options and abuse; every field has a safe default."""

    nsid: bytes | None = None
    """Returned to queries that ask for it (RFC 5001): which instance answered."""
    ecs_trusted: tuple[str, ...] = ()
    """Sources whose client subnet locates the client: none unless configured (anyone
    could otherwise claim to ask from anywhere, and pull another region's answers)."""
    """Sources whose EDNS Client Subnet is believed (your forwarders); others: ignored."""
    cookie_secret: bytes | None = None
    """Server cookies (RFC 7873/9018) when set; clients with a valid one skip RRL."""
    rrl: RrlConfig | None = None
    tcp_keepalive_s: float = 5.0
    """Advertised in edns-tcp-keepalive (RFC 7828) on TCP when the client asks."""
    explain_trusted: tuple[str, ...] = (
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "fc00::/7",
    )
    """Sources that may ask ``TXT _explain.<name>`` (a trace shows what is unhealthy)."""


Entry = Static | Located
CacheKey = tuple[tuple[bytes, ...], int, int]
_Pick = tuple[tuple[str, ...], bool]
"""The addresses an SRV answer takes (at most MAX_ANSWERS), and whether they depend on
where the client is."""


class Responder:
    def __init__(
        self,
        zone: Zone,
        locator: Locator,
        regions: Sequence[Region],
        options: Options | None = None,
        *,
        latency: Mapping[str, Mapping[str, float]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.zone = zone
        self.locator = locator
        self.regions = tuple(regions)
        self.options = options or Options()
        self.latency = latency or {}
        self.clock = clock
        self.snapshot: Snapshot = snapshots.empty()
        self.stats: Counter[str] = Counter()
        self.last_error: str | None = None
        self.limiter = RateLimiter(self.options.rrl) if self.options.rrl else None
        self._jurisdictions = {r.name: r.jurisdiction for r in self.regions}
        self._explain_trusted = tuple(ipaddress.ip_network(n) for n in self.options.explain_trusted)
        self._located: dict[tuple[str, str], Location] = {}
        trusted = tuple(ipaddress.ip_network(n) for n in self.options.ecs_trusted)
        self._trust_all = {n.version for n in trusted if n.prefixlen == 0} == {4, 6}
        self._trusted = trusted
        self._zone_labels = zone.labels
        self._cache: dict[CacheKey, Entry] = {}
        self._by_owner: dict[str, list[CacheKey]] = {}
        """Cache keys by what they depend on: ``<service>.<namespace>`` for the names at
        and under a service, ``<namespace>`` for the namespace's own name, and ``""``
        for the apex (whose SOA serial is the generation)."""
        self._orders: dict[str | None, tuple[str, ...]] = {}
        self._turn = itertools.count()
        self._srv_picks: dict[str, dict[tuple[int, policy.Client], _Pick]] = {}
        """Per owner, the addresses SRV answers take per (family, client): decided once
        for all of the service's SRV names, which differ only in the port they give."""

    def swap(self, snapshot: Snapshot) -> None:
        """Answer from ``snapshot`` from now on; every pre-packed answer is dropped."""
        self.snapshot = snapshot
        self._cache = {}
        self._by_owner = {}
        self._srv_picks = {}

    def invalidate(self, owners: Iterable[str]) -> None:
        """Drop the pre-packed answers of these owners (their entries were rebuilt).

        ``<service>.<namespace>`` drops that service's names and its namespace's own
        name (which may have become, or stopped being, an empty non-terminal); ``""``
        drops the apex.
        """
        cache, index = self._cache, self._by_owner
        for owner in owners:
            self._srv_picks.pop(owner, None)
            for dependent in (owner, owner.partition(".")[2]) if owner else ("",):
                for key in index.pop(dependent, ()):
                    cache.pop(key, None)

    # -- the hot path ------------------------------------------------------------------

    def handle(self, data: bytes, client: str, *, tcp: bool = False) -> bytes | None:
        try:
            parsed = wire.parse(data)
            message = self._handle(parsed, client, tcp)
            if message is None or tcp or self.limiter is None:
                return message
            return self._limit(parsed, message, client)
        except Exception:  # contain any fault to this one packet
            self.stats["internal_error"] += 1
            self.last_error = traceback.format_exc()
            if len(data) < 12 or data[2] & 0x80:
                return None
            ident, flags = int.from_bytes(data[:2], "big"), int.from_bytes(data[2:4], "big")
            return answers.header(ident, wire.QR | (flags & wire.RD) | SERVFAIL, 0, 0, 0, 0)

    def _handle(self, parsed: wire.Parsed, client: str, tcp: bool) -> bytes | None:
        if isinstance(parsed, wire.Dropped):
            self.stats["dropped"] += 1
            return None
        if isinstance(parsed, wire.Rejected):
            self.stats["formerr" if parsed.rcode == FORMERR else "notimp"] += 1
            return self._rejected(parsed)
        query = parsed
        if query.tsig is not None:
            self.stats["notauth"] += 1
            return self._badkey(query, query.tsig)
        opt = query.opt
        if opt is not None and opt.version > 0:
            self.stats["badvers"] += 1
            return self._finish(
                query, answers.Packed(wire.QR, 0, 0, 0, b""), tcp, client, ext_rcode=1
            )
        if query.labels[:1] == (b"_explain",) and query.qtype == TYPE_TXT and self._in_zone(query):
            return self._finish(query, self._explain_txt(query, client), tcp, client)
        key = (query.labels, query.qtype, query.qclass)
        entry = self._cache.get(key)
        if entry is None:
            entry = self._remember(key, self._decide(*key))
        scope = 0
        variants: Sequence[Packed]
        if isinstance(entry, Static):
            variants = entry.variants
        else:
            where, source = self._where(query, client)
            location = self._locate(where, source)
            bucket = self._bucket(entry, where, location)
            choice = entry.by_bucket.get(bucket)
            if choice is None:
                who = self._who(bucket, self._jurisdictions)
                choice = entry.by_bucket[bucket] = self._choose(entry, who)
            variants = choice.variants
            if choice.fallback is not None:
                self.stats[choice.fallback] += 1
            if source == "client subnet" and choice.location_dependent:
                scope = self._scope(entry, where, location)
        packed = variants[next(self._turn) % len(variants)] if len(variants) > 1 else variants[0]
        self.stats[_RCODE_NAMES.get(packed.flags & 0xF, "other")] += 1
        return self._finish(query, packed, tcp, client, scope=scope)

    def _remember(self, key: CacheKey, entry: Entry) -> Entry:
        if len(self._cache) >= MAX_CACHED_NAMES:
            self._cache, self._by_owner = {}, {}
        self._cache[key] = entry
        labels = key[0]
        depth = len(labels) - len(self._zone_labels)
        if depth >= 0 and labels[depth:] == self._zone_labels:
            relative = labels[:depth]
            owner = b".".join(relative[-2:]).decode("latin-1")
            self._by_owner.setdefault(owner, []).append(key)
        return entry

    def _options(
        self, opt: wire.Opt, client: str, *, tcp: bool, scope: int, ede: int | None
    ) -> bytes:
        out = b""
        if opt.nsid and self.options.nsid is not None:
            out += answers.option(wire.OPTION_NSID, self.options.nsid)
        if opt.subnet is not None:
            raw = opt.subnet.raw
            out += answers.option(wire.OPTION_ECS, raw[:3] + bytes((scope,)) + raw[3:])
        if opt.cookie is not None and self.options.cookie_secret is not None:
            client_cookie = opt.cookie[:8]
            out += answers.option(
                wire.OPTION_COOKIE, client_cookie + self._server_cookie(client, client_cookie)
            )
        if ede is not None:
            out += answers.option(wire.OPTION_EDE, struct.pack("!H", ede))
        if tcp and opt.keepalive:
            timeout = int(self.options.tcp_keepalive_s * 10)
            out += answers.option(wire.OPTION_KEEPALIVE, struct.pack("!H", timeout))
        return out

    def _finish(
        self,
        query: wire.Query,
        packed: Packed,
        tcp: bool,
        client: str,
        *,
        scope: int = 0,
        ext_rcode: int = 0,
    ) -> bytes:
        flags = packed.flags | (query.flags & (wire.RD | wire.CD))
        arcount = packed.arcount
        opt = b""
        if query.opt is not None:
            options = self._options(query.opt, client, tcp=tcp, scope=scope, ede=packed.ede)
            opt = answers.opt_record(do=query.opt.do, ext_rcode=ext_rcode, options=options)
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

    def _badkey(self, query: wire.Query, tsig: wire.Tsig) -> bytes:
        """NOTAUTH with an unsigned TSIG saying BADKEY: we hold no keys (RFC 8945 5.3.2)."""
        flags = wire.QR | (query.flags & (wire.RD | wire.CD)) | wire.NOTAUTH
        opt = answers.opt_record(do=query.opt.do) if query.opt is not None else b""
        head = answers.header(query.id, flags, 1, 0, 0, 2 if opt else 1)
        return head + query.question + opt + answers.tsig_badkey(tsig, query.id)

    # -- abuse ------------------------------------------------------------------------

    def _trusts(self, client: str) -> bool:
        if self._trust_all:
            return True
        try:
            ip = ipaddress.ip_address(client)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def _server_cookie(self, client: str, client_cookie: bytes, stamp: int | None = None) -> bytes:
        """RFC 9018 layout: version 1, reserved, timestamp, then an 8-octet keyed hash."""
        assert self.options.cookie_secret is not None
        head = b"\x01\x00\x00\x00" + struct.pack(
            "!I", int(self.clock()) if stamp is None else stamp
        )
        digest = hashlib.blake2b(
            client_cookie + head + client.encode(), key=self.options.cookie_secret, digest_size=8
        ).digest()
        return head + digest

    def _cookie_valid(self, client: str, cookie: bytes) -> bool:
        if self.options.cookie_secret is None or len(cookie) != 24 or cookie[8] != 1:
            return False
        (stamp,) = struct.unpack_from("!I", cookie, 12)
        if not -300 <= self.clock() - stamp <= 3600:
            return False
        return hmac.compare_digest(self._server_cookie(client, cookie[:8], stamp), cookie[8:])

    def _limit(self, parsed: wire.Parsed, message: bytes, client: str) -> bytes | None:
        assert self.limiter is not None
        if isinstance(parsed, wire.Query):
            opt = parsed.opt
            if (
                opt is not None
                and opt.cookie is not None
                and self._cookie_valid(client, opt.cookie)
            ):
                return message
            labels, qtype = parsed.labels, parsed.qtype
        else:
            labels, qtype = (), 0
        rcode = message[3] & 0xF
        ancount = int.from_bytes(message[6:8], "big")
        if rcode == NOERROR and ancount:
            kind, name = "answer", b".".join(labels) + qtype.to_bytes(2, "big")
        elif rcode in (NOERROR, NXDOMAIN):
            kind, name = ("nxdomain" if rcode == NXDOMAIN else "nodata"), b""
        else:
            kind, name = "error", b""
        action = self.limiter.check(client, kind, name, self.clock())
        if action is Action.SEND:
            return message
        if action is Action.DROP:
            return None
        if kind == "error" or not isinstance(parsed, wire.Query):
            return message  # errors cannot be truncated usefully: they leak whole
        # Slip: a minimal TC=1 reply sends a real client to TCP, which is not limited.
        arcount = 1 if parsed.opt is not None else 0
        flags = int.from_bytes(message[2:4], "big") | wire.TC
        tail = answers.opt_record(do=parsed.opt.do) if parsed.opt is not None else b""
        return answers.header(parsed.id, flags, 1, 0, 0, arcount) + parsed.question + tail

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
        if qclass != CLASS_IN:
            ede = answers.EDE_PROHIBITED if qclass == 3 else answers.EDE_NOT_SUPPORTED
            return self._refused(labels, qtype, qclass, ede)
        if depth < 0 or labels[depth:] != zone:
            return self._refused(labels, qtype, qclass, answers.EDE_NOT_AUTHORITATIVE)
        if qtype in (TYPE_AXFR, TYPE_IXFR):
            return self._refused(labels, qtype, qclass, answers.EDE_PROHIBITED)
        if qtype in META_TYPES:
            return Static(
                (answers.pack(labels, qtype, qclass, rcode=FORMERR, authoritative=False),)
            )
        if qtype in (TYPE_MAILA, TYPE_MAILB):
            return Static((answers.pack(labels, qtype, qclass, rcode=NOTIMP, authoritative=False),))
        relative = labels[:depth]
        if not relative:
            return self._apex(labels, qtype, qclass)
        if any(b"." in label for label in relative):
            # No name of ours has a dot inside a label; joining would alias other names.
            return self._negative(labels, qtype, qclass, NXDOMAIN)
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
        if not self.snapshot.loaded:
            # Never NXDOMAIN from ignorance: a forwarder would cache it for every name.
            # SERVFAIL makes it try another resolver (RFC 8914 "Not Ready").
            return Static(
                (
                    answers.pack(
                        labels,
                        qtype,
                        qclass,
                        rcode=SERVFAIL,
                        authoritative=False,
                        ede=answers.EDE_NOT_READY,
                    ),
                )
            )
        srv = self._srv(labels, relative, qtype, qclass)
        if srv is not None:
            return srv
        owner = b".".join(relative).decode("latin-1")
        pinned = None
        if depth == 3 and owner.partition(".")[2] in self.snapshot.services:
            cluster, _, rest = owner.partition(".")
            entry = self.snapshot.services[rest]
            if cluster in entry.clusters:
                owner, pinned = rest, cluster
            else:
                target = _undash(cluster)
                known = entry.candidate(target) if target is not None else None
                if known is not None:  # an SRV target: <address-with-dashes>.<service>.<ns>
                    if _family_matches(known.address, qtype):
                        record = answers.a_or_aaaa(labels, known.address, self.ttl_of(entry))
                        return Static((answers.pack(labels, qtype, qclass, answers=[record]),))
                    return self._negative(labels, qtype, qclass, NOERROR)
        if owner in self.snapshot.services:
            family = {answers.TYPE_A: 4, answers.TYPE_AAAA: 6, answers.TYPE_ANY: 4}.get(qtype)
            if family is None:
                return self._negative(labels, qtype, qclass, NOERROR)
            return Located(owner, family, labels, qtype, qclass, pinned)
        if depth == 1 and relative[0].decode("latin-1") in self.snapshot.namespaces:
            return self._negative(labels, qtype, qclass, NOERROR)  # empty non-terminal
        return self._negative(labels, qtype, qclass, NXDOMAIN)

    def _srv(
        self, labels: tuple[bytes, ...], relative: tuple[bytes, ...], qtype: int, qclass: int
    ) -> Entry | None:
        """``_<port>._<proto>.<service>.<namespace>`` (and ``_<proto>...`` above it)."""
        if not relative or not relative[0].startswith(b"_"):
            return None
        protocols = {b"_tcp": "TCP", b"_udp": "UDP", b"_sctp": "SCTP"}
        if relative[0] in protocols and len(relative) == 3:
            owner = b".".join(relative[1:]).decode("latin-1")
            if owner in self.snapshot.services:
                return self._negative(labels, qtype, qclass, NOERROR)  # empty non-terminal
            return None
        if len(relative) != 4 or relative[1] not in protocols:
            return None
        owner = b".".join(relative[2:]).decode("latin-1")
        service = self.snapshot.services.get(owner)
        if service is None:
            return None
        name, protocol = relative[0][1:].decode("latin-1"), protocols[relative[1]]
        if (name, protocol) not in service.srv_names:
            return self._negative(labels, qtype, qclass, NXDOMAIN)
        if qtype not in (TYPE_SRV, answers.TYPE_ANY):
            return self._negative(labels, qtype, qclass, NOERROR)
        return Located(owner, 4, labels, qtype, qclass, srv=(name, protocol))

    def _choose_srv(self, entry: Located, who: policy.Client) -> Choice:
        """SRV records for the endpoints the policy gives, each with its own port.

        Bounded whatever the service holds: at most :data:`policy.MAX_ANSWERS` addresses
        per family are looked at (each by index, its ports scanned once), and the answers
        are at most two rotations of :data:`policy.MAX_ANSWERS` records.
        """
        assert entry.srv is not None
        service = self.snapshot.services[entry.owner]
        wanted = entry.srv
        records: list[tuple[int, tuple[bytes, ...]]] = []
        dependent = False
        for family in (4, 6):
            chosen, location_dependent = self._srv_pick(entry, family, who)
            dependent |= location_dependent
            for address in chosen:
                candidate = service.candidate(address)
                if candidate is None:
                    continue  # last known good, no longer registered
                port = next((p.port for p in candidate.ports if (p.name, p.protocol) == wanted), 0)
                if port:
                    records.append((port, (_dash(address).encode(), *entry.labels[2:])))
        if not records:
            negative = self._negative(entry.labels, entry.qtype, entry.qclass, NOERROR)
            return Choice(negative.variants, dependent)
        ttl = self.ttl_of(service)
        rrs = [answers.srv(entry.labels, port, target, ttl) for port, target in records]
        variants = tuple(
            answers.pack(entry.labels, entry.qtype, entry.qclass, answers=list(rotation))
            for rotation in policy.rotations(rrs)
        )
        return Choice(variants, dependent)

    def _srv_pick(self, entry: Located, family: int, who: policy.Client) -> _Pick:
        picks = self._srv_picks.get(entry.owner)
        if picks is None:
            if len(self._srv_picks) >= MAX_CACHED_NAMES:
                self._srv_picks = {}
            picks = self._srv_picks[entry.owner] = {}
        pick = picks.get((family, who))
        if pick is None:
            decision = self.decision(replace(entry, family=family), who)
            pick = (decision.addresses[: policy.MAX_ANSWERS], decision.location_dependent)
            picks[family, who] = pick
        return pick

    def ttl_of(self, service: snapshots.ServiceEntry) -> int:
        """The TTL of a service's answers: its own, else the resolver's GLOBALDNS_TTL."""
        return self.zone.ttl if service.ttl is None else service.ttl

    def _refused(self, labels: tuple[bytes, ...], qtype: int, qclass: int, ede: int) -> Static:
        packed = answers.pack(labels, qtype, qclass, rcode=REFUSED, authoritative=False, ede=ede)
        return Static((packed,))

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
            order = self._orders[region] = region_order(region, self.regions, self.latency)
        return order

    # -- policy ------------------------------------------------------------------------

    def _where(self, query: wire.Query, client: str) -> tuple[str, str]:
        """The address that locates the client: a trusted client subnet, else the source."""
        subnet = query.opt.subnet if query.opt is not None else None
        if subnet is not None and subnet.source > 0 and self._trusts(client):
            return subnet.address, "client subnet"
        return client, "source address"

    def _locate(self, where: str, source: str) -> Location:
        """The locator's answer, remembered per address until the table is full."""
        key = (where, source)
        location = self._located.get(key)
        if location is None:
            if len(self._located) >= MAX_CACHED_NAMES:
                self._located = {}
            location = self._located[key] = self.locator.locate(where, source=source)
        return location

    def _bucket(self, entry: Located, where: str, location: Location) -> tuple[object, ...]:
        """What the service's policy looks at about this client (cheap: every query)."""
        if entry.pinned is not None:
            return ()
        service = self.snapshot.services[entry.owner]
        kind = service.policy.kind
        if kind == "all":
            return ()
        if kind == "weighted":
            pick = policy.weighted_pick(service, entry.family, _subnet_of(where))
            return (location.region, location.cluster, pick)
        return (location.region, location.cluster)

    @staticmethod
    def _who(bucket: tuple[object, ...], jurisdictions: Mapping[str, str | None]) -> policy.Client:
        """The client as a decision sees it (only on a miss of the bucket)."""
        if not bucket:
            return policy.Client()
        region, cluster = bucket[0], bucket[1]
        assert region is None or isinstance(region, str)
        assert cluster is None or isinstance(cluster, str)
        pick = bucket[2] if len(bucket) > 2 else None
        assert pick is None or isinstance(pick, str)
        return policy.Client(
            region=region,
            cluster=cluster,
            jurisdiction=jurisdictions.get(region) if region else None,
            pick=pick,
        )

    def _client(
        self, entry: Located, where: str, source: str
    ) -> tuple[tuple[object, ...], policy.Client, Location]:
        location = self._locate(where, source)
        bucket = self._bucket(entry, where, location)
        return bucket, self._who(bucket, self._jurisdictions), location

    def _scope(self, entry: Located, where: str, location: Location) -> int:
        service = self.snapshot.services[entry.owner]
        if service.policy.kind == "weighted":
            return STICKY_V6 if ":" in where else STICKY_V4
        return self.locator.scope(where, location)

    def decision(self, entry: Located, who: policy.Client) -> policy.Decision:
        service = self.snapshot.services[entry.owner]
        if entry.pinned is not None:
            return policy.pinned(service, entry.family, entry.pinned)
        return policy.decide(
            service,
            entry.family,
            who,
            order=self._order(who.region),
            jurisdictions=self._jurisdictions,
        )

    def _choose(self, entry: Located, who: policy.Client) -> Choice:
        if entry.srv is not None:
            return self._choose_srv(entry, who)
        decision = self.decision(entry, who)
        if not decision.addresses:
            negative = self._negative(entry.labels, entry.qtype, entry.qclass, NOERROR)
            return Choice(negative.variants, decision.location_dependent, _fallback(decision))
        ttl = self.ttl_of(self.snapshot.services[entry.owner])
        addresses = decision.addresses

        def pack(k: int) -> Packed:
            records = [
                answers.a_or_aaaa(entry.labels, a, ttl) for a in policy.rotation(addresses, k)
            ]
            return answers.pack(entry.labels, entry.qtype, entry.qclass, answers=records)

        return Choice(
            Variants(policy.rotation_count(len(addresses)), pack),
            decision.location_dependent,
            _fallback(decision),
        )

    def decide(self, owner: str, family: int, region: str | None) -> policy.Decision | None:
        """The decision for ``owner`` as a client in ``region`` gets it (zone export)."""
        service = self.snapshot.services.get(owner)
        if service is None:
            return None
        entry = Located(owner, family, (), 0, 0)
        who = policy.Client(region=region, jurisdiction=self._jurisdictions.get(region or ""))
        if service.policy.kind == "weighted":
            who = replace(who, pick=policy.weighted_pick(service, family, 0))
        return self.decision(entry, who)

    # -- explaining ---------------------------------------------------------------------

    def explain(
        self, name: str, qtype: int, client: str, subnet: str | None = None
    ) -> dict[str, Any]:
        """Why ``client`` (or a client in ``subnet``) gets the answer it gets, step by step.

        Raises ValueError for a name that is not plain ASCII (HTTP callers get a 400).
        """
        labels = tuple(p.encode("ascii").lower() for p in name.strip(".").split(".") if p)
        if any(len(label) > 63 for label in labels) or sum(len(x) + 1 for x in labels) > 254:
            raise ValueError("not a DNS name: a label over 63 or a name over 255 octets")
        return self._explain(labels, qtype, client, subnet)

    def _explain(
        self, labels: tuple[bytes, ...], qtype: int, client: str, subnet: str | None
    ) -> dict[str, Any]:
        snap = self.snapshot
        out: dict[str, Any] = {
            "name": b".".join(labels).decode("ascii", errors="backslashreplace") + ".",
            "type": {1: "A", 28: "AAAA"}.get(qtype, str(qtype)),
            "client": client,
            "generation": snap.generation,
        }
        where, source = (subnet, "client subnet") if subnet else (client, "source address")
        entry = self._decide(labels, qtype, CLASS_IN)
        if isinstance(entry, Static):
            packed = entry.variants[0]
            out["rcode"] = _RCODE_NAMES.get(packed.flags & 0xF, "other").upper()
            out["reason"] = "not a service name: answered from the zone itself"
            return out
        _bucket, who, location = self._client(entry, where, source)
        decision = self.decision(entry, who)
        service = snap.services[entry.owner]
        out.update(
            location={
                "address": where,
                "source": location.source,
                "region": location.region,
                "cluster": location.cluster,
                "jurisdiction": who.jurisdiction,
            },
            service=service.key,
            policy=service.policy.model_dump(),
            policy_source=service.policy_source,
            region_order=list(self._order(who.region)),
            branch=decision.branch,
            reason=decision.reason,
            trace=list(decision.trace),
            rcode="NOERROR",
            answer=list(decision.addresses[: policy.MAX_ANSWERS]),
            rotated_among=list(decision.addresses),
            ttl=self.ttl_of(service),
            candidates=[
                {
                    "address": c.address,
                    "cluster": c.cluster,
                    "region": c.region,
                    "healthy": c.healthy,
                    "reasons": list(c.reasons),
                    "chosen": c.address in decision.addresses,
                }
                for c in service.candidates
                if c.family == entry.family
            ],
        )
        if who.pick is not None:
            out["weighted_pick"] = who.pick
        return out

    def _in_zone(self, query: wire.Query) -> bool:
        zone = self._zone_labels
        return (
            query.qclass == CLASS_IN
            and len(query.labels) > len(zone) + 1
            and query.labels[-len(zone) :] == zone
        )

    def may_explain(self, client: str) -> bool:
        """Whether ``client`` may see the trace of its own answers (``explain_trusted``)."""
        return _in(client, self._explain_trusted)

    def _explain_txt(self, query: wire.Query, client: str) -> Packed:
        """``dig TXT _explain.<name>``: the trace for the querying client, as TXT strings.

        Only for clients in ``explain_trusted`` (a trace names unhealthy endpoints and
        why), and never cached: it is a debugging aid, not a service.
        """
        if not _in(client, self._explain_trusted):
            self.stats["explain_refused"] += 1
            return answers.pack(
                query.labels,
                query.qtype,
                query.qclass,
                rcode=REFUSED,
                authoritative=False,
                ede=answers.EDE_PROHIBITED,
            )
        subnet = None
        where, source = self._where(query, client)
        if source == "client subnet":
            subnet = where
        report = self._explain(query.labels[1:], answers.TYPE_A, client, subnet)
        lines = [f"answer={','.join(report.get('answer', [])) or '-'} rcode={report['rcode']}"]
        if "location" in report:
            loc = report["location"]
            lines += [
                f"client={loc['address']} via {loc['source']} region={loc['region']}"
                f" cluster={loc['cluster']} jurisdiction={loc['jurisdiction']}",
                f"policy={report['policy']['kind']} ({report['policy_source']})",
                f"branch={report['branch']} reason={report['reason']}",
                f"order={','.join(report['region_order'])}",
                f"ttl={report['ttl']} generation={report['generation']}",
                *report["trace"][1:],
            ]
            if "weighted_pick" in report:
                lines.append(f"weighted_pick={report['weighted_pick']}")
        else:
            lines.append(report["reason"])
        record = answers.txt(query.labels, _bounded_lines(lines, EXPLAIN_TXT_BYTES))
        return answers.pack(query.labels, query.qtype, query.qclass, answers=[record])


EXPLAIN_TXT_BYTES = 16_384
"""The most an ``_explain`` TXT record carries. A trace lists every skipped endpoint, and
a service of many unhealthy endpoints would exceed what one record (64 KiB) can hold;
the rest is cut with a note pointing at ``/v1/explain``. Over UDP a TXT this size is
answered with TC=1 like any answer too large, and the client asks again over TCP."""


def _bounded_lines(lines: Sequence[str], budget: int) -> list[str]:
    """``lines`` as TXT strings (255 octets each) within ``budget`` octets of rdata,
    the last one saying how many were left out."""
    out: list[str] = []
    used = 0
    reserve = 64  # room for the note
    for i, line in enumerate(lines):
        text = line.encode()[:255].decode(errors="ignore")
        size = len(text.encode()) + 1
        if used + size > budget - reserve:
            left = len(lines) - i
            out.append(f"... {left} more lines: GET /v1/explain on the resolver has them all")
            return out
        out.append(text)
        used += size
    return out


def _fallback(decision: policy.Decision) -> str | None:
    """``all_unhealthy_<choice>`` when nothing healthy was left to answer with."""
    if decision.branch.startswith("all-unhealthy-") or decision.branch == "fenced-empty":
        return "all_unhealthy_" + decision.branch.removeprefix("all-unhealthy-").replace("-", "_")
    return None


def _dash(address: str) -> str:
    """An address as one DNS label, as Kubernetes DNS writes pod names: 10-1-2-3."""
    return address.replace(".", "-").replace(":", "-")


def _undash(label: str) -> str | None:
    for candidate in (label.replace("-", "."), label.replace("-", ":")):
        try:
            return ipaddress.ip_address(candidate).compressed
        except ValueError:
            continue
    return None


def _subnet_of(address: str) -> int:
    """The client's /24 (IPv4) or /56 (IPv6) as a number: the unit of stickiness."""
    try:
        if ":" in address:
            raw = int.from_bytes(socket.inet_pton(socket.AF_INET6, address), "big")
            return raw >> (128 - STICKY_V6)
        return int.from_bytes(socket.inet_pton(socket.AF_INET, address), "big") >> (32 - STICKY_V4)
    except OSError:
        return 0


def _family_matches(address: str, qtype: int) -> bool:
    """Whether ``address`` answers ``qtype``: A and ANY take IPv4, AAAA IPv6, others none."""
    v6 = ":" in address
    if qtype == answers.TYPE_AAAA:
        return v6
    return qtype in (answers.TYPE_A, answers.TYPE_ANY) and not v6


def _in(client: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(client)
    except ValueError:
        return False
    return any(ip in network for network in networks)


_RCODE_NAMES = {
    NOERROR: "noerror",
    FORMERR: "formerr",
    SERVFAIL: "servfail",
    NXDOMAIN: "nxdomain",
    NOTIMP: "notimp",
    REFUSED: "refused",
}
