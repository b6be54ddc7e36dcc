"""A differential test: our resolver and Knot, serving the same registry, answer alike.

The registry is filled through the real API (a real Redis behind it), the resolver
follows it, and ``globaldns export-zone`` — run as the command it is — writes the same
registry as a zone file, which a ``knotd`` of the test's own serves from ``tmp_path``
(loopback only; the machine's own Knot service, if any, is never touched). Then both
servers get the same queries, every one with several header and EDNS variants, over UDP
and TCP, and must agree on the rcode, the header flags and the answer and authority
RRsets (TTLs included).

Only queries whose answer does not depend on where the client is are compared, plus the
service names asked from 127.0.0.1 (the topology's default region, which is the region
the file is exported for). Where Knot and we may both be right and still differ, the
difference is normalised in :func:`differences`, each with its reason; nothing else is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.zone

from tests.conftest import require_tool
from tests.helpers import ADMIN, ROOT, TOKENS, TOPOLOGY_FILE, ZONE, eventually, registry, resolver

LEASE_TTL_S = 3600.0  # no lease may run out while the test compares
NAMESERVERS = {
    f"ns1.{ZONE}": ["127.0.0.1", "::1"],
    f"ns2.{ZONE}": ["127.0.0.2"],
    "ns.example.net": [],  # outside the zone: an NS record, no address of ours
}
PREFIX = {"us-east-prod": "10.1", "eu-west-prod": "10.2", "ap-south-prod": "10.3"}
V6 = {"us-east-prod": "fd00:1", "eu-west-prod": "fd00:2", "ap-south-prod": "fd00:3"}
FLAGS = {
    "QR": dns.flags.QR,
    "AA": dns.flags.AA,
    "TC": dns.flags.TC,
    "RD": dns.flags.RD,
    "RA": dns.flags.RA,
    "CD": dns.flags.CD,
    "AD": dns.flags.AD,
}
EDE = 15  # RFC 8914 Extended DNS Error option code

# Differences that are bugs of ours, reported and not fixed yet (resolver/respond.py is
# someone else's to change). These queries are still sent and compared: any difference
# outside the sections named here fails the test as usual, and so does the bug's being
# gone, so that the entry is removed with the fix.
KNOWN_BUGS: dict[tuple[str, str], str] = {}
KNOWN_BUG_SECTIONS = ("answer:", "authority:")

# Names that exist for the resolver without an address to give (a pinned cluster with
# nothing healthy: NOERROR, no answer, the SOA) and that a zone file cannot hold: a name
# without records does not exist there, so Knot says NXDOMAIN (with the same SOA). The
# exported file says so in a comment (resolver.zonefile). Only that rcode may differ.
EMPTY_NAMES = {f"ap-south-prod.api.production.{ZONE}"}


def _endpoints(cluster: str, n: int, *, v6: int = 0, **extra: Any) -> list[dict[str, Any]]:
    return [{"address": f"{PREFIX[cluster]}.0.{i}", **extra} for i in range(1, n + 1)] + [
        {"address": f"{V6[cluster]}::{i}", **extra} for i in range(1, v6 + 1)
    ]


def _service(namespace: str, name: str, endpoints: list[Any], **extra: Any) -> dict[str, Any]:
    return {"namespace": namespace, "name": name, "endpoints": endpoints, **extra}


def _reports() -> dict[str, list[dict[str, Any]]]:
    """Services chosen so that every kind of decision shows up for us-east-1.

    Nothing that is unhealthy now was ever healthy: the resolver keeps the endpoints last
    known good from snapshot to snapshot, a zone exported once cannot (resolver.zonefile).
    """
    not_ready = {"conditions": {"ready": False}}
    failing = {"probe": {"healthy": False, "detail": "timeout"}}
    failover = {"kind": "failover", "order": ["eu-west-prod", "us-east-prod"]}
    return {
        "us-east-prod": [
            # geo, the nearest region has it: us-east's own endpoints, A and AAAA
            _service("production", "api", _endpoints("us-east-prod", 2, v6=1)),
            # nothing healthy anywhere, ever: every endpoint (fail open)
            _service("production", "batch", _endpoints("us-east-prod", 2, **not_ready)),
            # one endpoint failing its probe: only the other one
            _service(
                "staging",
                "cache",
                [{"address": "10.1.9.1", **failing}, {"address": "10.1.9.2"}],
            ),
            # failover: the first healthy item of the order, wherever the client is
            _service("production", "pay", _endpoints("us-east-prod", 1), policy=failover),
            # all: every healthy endpoint
            _service("production", "static", _endpoints("us-east-prod", 1), policy={"kind": "all"}),
            # nothing healthy of IPv4 and when_all_unhealthy none: A is NODATA
            _service(
                "staging",
                "queue",
                [{"address": "10.1.8.1", **not_ready}, {"address": "fd00:1::8:1"}],
                policy={"kind": "geo", "when_all_unhealthy": "none"},
            ),
        ],
        "eu-west-prod": [
            _service("production", "api", _endpoints("eu-west-prod", 2, v6=1)),
            # not in us-east: the nearest region that has it, with the service's own TTL
            _service("production", "web", _endpoints("eu-west-prod", 3), ttl=30),
            _service("production", "pay", _endpoints("eu-west-prod", 2), policy=failover),
            _service("production", "static", _endpoints("eu-west-prod", 1), policy={"kind": "all"}),
        ],
        "ap-south-prod": [  # drained below
            _service("production", "api", _endpoints("ap-south-prod", 2, v6=1)),
            _service("production", "web", _endpoints("ap-south-prod", 1), ttl=30),
            _service("production", "batch", _endpoints("ap-south-prod", 1, **not_ready)),
            # IPv6 only, never healthy: AAAA fails open, A is NODATA
            _service("staging", "db", _endpoints("ap-south-prod", 0, v6=2, **failing)),
        ],
    }


def _env(redis_url: str) -> dict[str, str]:
    """The GLOBALDNS_* settings the exporter shares with the resolver under test."""
    return {
        "GLOBALDNS_REDIS_URL": redis_url,
        "GLOBALDNS_TOPOLOGY": str(TOPOLOGY_FILE),
        "GLOBALDNS_ZONE": ZONE,
        "GLOBALDNS_LEASE_TTL_S": str(LEASE_TTL_S),
        "GLOBALDNS_NAMESERVERS": json.dumps(NAMESERVERS),
    }


@contextlib.asynccontextmanager
async def populated(redis_url: str) -> AsyncIterator[int]:
    """Registry and resolver on loopback, the registry filled; yields the resolver's port."""
    nameservers = {k: tuple(v) for k, v in NAMESERVERS.items()}
    async with (
        registry(redis_url) as api,
        # No RRL, as in the Knot below: hundreds of queries come from the one address.
        resolver(redis_url, lease_ttl_s=LEASE_TTL_S, nameservers=nameservers, rrl_rate=0) as bound,
        aiohttp.ClientSession() as s,
    ):
        for cluster, services in _reports().items():
            headers = {"Authorization": f"Bearer {TOKENS[cluster]}"}
            report = {"seq": 1, "services": services}
            async with s.post(f"{api}/v1/reports", json=report, headers=headers) as r:
                assert r.status == 200, await r.text()
        headers = {"Authorization": f"Bearer {ADMIN}"}
        drain = f"{api}/v1/clusters/ap-south-prod/drain"
        # forced: db.staging, only in ap-south, has no healthy cluster to lose anyway
        async with s.post(drain, json={"reason": "test", "force": True}, headers=headers) as r:
            assert r.status == 200, await r.text()
        yield bound.dns_port


async def run_export(redis_url: str, *args: str) -> tuple[int, str, str]:
    """``globaldns export-zone ARGS`` as a separate process: exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "globaldns.cli",
        "export-zone",
        *args,
        cwd=ROOT,
        env={**os.environ, **_env(redis_url)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def export_zone(redis_url: str, *args: str) -> str:
    code, out, err = await run_export(redis_url, *args)
    assert code == 0, err
    return out


def serial_of(zone_text: str) -> int:
    zone = dns.zone.from_text(zone_text, origin=ZONE, relativize=False)
    soa = zone.find_rdataset(ZONE + ".", "SOA")[0]
    return int(soa.serial)


async def synced(port: int, serial: int) -> None:
    """Wait until our resolver answers from the generation the file was exported at."""

    async def current() -> bool:
        reply = await asyncio.to_thread(ask, port, Query(ZONE, "SOA"))
        return bool(reply.answer) and reply.answer[0][0].serial == serial

    await eventually(current)


# -- Knot ------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port free for both UDP and TCP (Knot listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise AssertionError("no loopback port free for both UDP and TCP")


def knot_conf(directory: Path, port: int, zone_file: Path) -> Path:
    """A knotd configuration that keeps everything under ``directory``.

    No module is loaded: in particular no RRL (mod-rrl), which would slip or drop some of
    the hundreds of queries from the one source address.
    """
    for sub in ("run", "db", "zones"):
        (directory / sub).mkdir(exist_ok=True)
    conf = directory / "knot.conf"
    conf.write_text(
        f"""\
server:
    rundir: "{directory / "run"}"
    pidfile: "{directory / "run" / "knot.pid"}"
    listen: 127.0.0.1@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1

control:
    listen: "{directory / "run" / "knot.sock"}"

database:
    storage: "{directory / "db"}"

log:
  - target: stderr
    any: info

template:
  - id: default
    storage: "{directory / "zones"}"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none

zone:
  - domain: {ZONE}
    file: "{zone_file}"
"""
    )
    return conf


@contextlib.contextmanager
def knotd(binary: str, conf: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``knotd -c conf``, started and killed by this test alone."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT, cwd=conf.parent
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def knot_serving(process: subprocess.Popen[bytes], port: int, serial: int, log: Path) -> None:
    async def loaded() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"knotd exited ({process.returncode}):\n{_read(log)}")
        try:
            reply = await asyncio.to_thread(ask, port, Query(ZONE, "SOA"), timeout=0.5)
        except (OSError, dns.exception.DNSException):
            return False
        return bool(reply.answer) and reply.answer[0][0].serial == serial

    try:
        await eventually(loaded, interval=0.1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nknotd log:\n{_read(log)}") from None


def _read(path: Path) -> str:
    return path.read_text(errors="replace")


# -- queries ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    name: str
    rdtype: str
    flags: int = 0
    edns: bool = True
    do: bool = False
    tcp: bool = False

    def __str__(self) -> str:
        flags = dns.flags.to_text(self.flags) or "-"
        edns = ("edns do" if self.do else "edns") if self.edns else "no-edns"
        return f"{self.name} {self.rdtype} [{flags}] {edns} {'tcp' if self.tcp else 'udp'}"


def ask(
    port: int, query: Query, *, source: str = "127.0.0.1", timeout: float = 2.0
) -> dns.message.Message:
    message = dns.message.make_query(
        query.name,
        query.rdtype,
        use_edns=0 if query.edns else False,
        want_dnssec=query.do,
        flags=query.flags,
    )
    send = dns.query.tcp if query.tcp else dns.query.udp
    return send(message, "127.0.0.1", port=port, source=source, timeout=timeout)


def checklist() -> list[tuple[str, str]]:
    z = ZONE
    mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(z))
    return [
        # the apex: SOA and NS answered, every other type NODATA
        (z, "SOA"),
        (z, "NS"),
        (z, "A"),
        (z, "MX"),
        (z, "TXT"),
        (z, "TYPE666"),
        # the nameservers' own addresses (the glue), and NODATA beside them
        (f"ns1.{z}", "A"),
        (f"ns1.{z}", "AAAA"),
        (f"ns1.{z}", "TXT"),
        (f"ns2.{z}", "A"),
        (f"ns2.{z}", "AAAA"),
        (f"ns2.{z}", "MX"),
        # NXDOMAIN, and below it (RFC 8020), and below existing names
        (f"nope.{z}", "A"),
        (f"nope.{z}", "TXT"),
        (f"a.b.nope.{z}", "A"),
        (f"nope.production.{z}", "A"),
        (f"x.api.production.{z}", "A"),
        (f"x.ns1.{z}", "A"),
        # empty non-terminals: the namespaces
        (f"production.{z}", "A"),
        (f"production.{z}", "TXT"),
        (f"staging.{z}", "AAAA"),
        # services, as a client in the default region gets them
        (f"api.production.{z}", "A"),
        (f"api.production.{z}", "AAAA"),
        (f"api.production.{z}", "MX"),
        (f"api.production.{z}", "TXT"),
        (f"api.production.{z}", "TYPE666"),
        (f"web.production.{z}", "A"),
        (f"web.production.{z}", "AAAA"),
        (f"batch.production.{z}", "A"),
        (f"cache.staging.{z}", "A"),
        (f"cache.staging.{z}", "AAAA"),
        (f"db.staging.{z}", "A"),
        (f"db.staging.{z}", "AAAA"),
        (f"pay.production.{z}", "A"),
        (f"static.production.{z}", "A"),
        (f"queue.staging.{z}", "A"),
        (f"queue.staging.{z}", "AAAA"),
        # pinned names: one cluster's healthy endpoints, for every client alike
        (f"us-east-prod.api.production.{z}", "A"),
        (f"us-east-prod.api.production.{z}", "AAAA"),
        (f"us-east-prod.api.production.{z}", "TXT"),
        (f"eu-west-prod.web.production.{z}", "A"),
        (f"ap-south-prod.api.production.{z}", "A"),  # drained: see EMPTY_NAMES
        (f"ap-south-prod.api.production.{z}", "AAAA"),
        (f"us-east-prod.web.production.{z}", "A"),  # us-east has no web: NXDOMAIN
        (f"x.us-east-prod.api.production.{z}", "A"),
        # outside the zone: REFUSED
        ("www.example.org", "A"),
        ("example.com", "A"),
        ("example.com", "SOA"),
        (f"x{z}", "A"),  # the zone's name as a suffix, not at a label boundary
        (".", "NS"),
        # the same, with 0x20 mixed case
        (mixed, "SOA"),
        (mixed, "NS"),
        (f"NoPe.{mixed}", "A"),
        (f"PRODUCTION.{mixed}", "TXT"),
        (f"ApI.pRoDuCtIoN.{mixed}", "A"),
        (f"NS1.{mixed}", "AAAA"),
        (f"US-EAST-prod.aPi.Production.{mixed}", "A"),
        ("WWW.Example.ORG", "A"),
    ]


def variants(name: str, rdtype: str) -> list[Query]:
    return [
        Query(name, rdtype),
        Query(name, rdtype, flags=dns.flags.RD),
        Query(name, rdtype, flags=dns.flags.CD),
        Query(name, rdtype, flags=dns.flags.RD | dns.flags.CD),
        Query(name, rdtype, flags=dns.flags.AD),
        Query(name, rdtype, do=True),
        Query(name, rdtype, edns=False),
        Query(name, rdtype, flags=dns.flags.RD, tcp=True),
    ]


# -- comparing -------------------------------------------------------------------------


def _rrsets(section: list[dns.rrset.RRset]) -> list[dns.rrset.RRset]:
    return sorted(section, key=lambda r: (r.name.canonicalize(), r.rdtype, r.rdclass))


def _same_rrsets(ours: list[dns.rrset.RRset], theirs: list[dns.rrset.RRset]) -> bool:
    # dnspython's RRset equality: names compare case-insensitively, owners and names in
    # the data alike (an owner is often a compression pointer into the question, so it
    # carries the question's 0x20 case, in either server, and the SOA's MNAME may point
    # into it too; DNS names are equal regardless of case, RFC 4343). Records compare as
    # a set: we rotate them, Knot does not, and RRset order carries no meaning (RFC 2181
    # §5). The TTL is not part of that equality, so it is compared here on its own.
    a, b = _rrsets(ours), _rrsets(theirs)
    return len(a) == len(b) and all(x == y and x.ttl == y.ttl for x, y in zip(a, b, strict=True))


def _text(section: list[dns.rrset.RRset]) -> str:
    return " | ".join(r.to_text().replace("\n", " ; ") for r in _rrsets(section)) or "(none)"


def _flags(message: dns.message.Message, *, but: int = 0) -> list[str]:
    return [name for name, bit in FLAGS.items() if message.flags & bit & ~but]


def _options(message: dns.message.Message) -> list[tuple[int, bytes]]:
    return sorted((int(o.otype), o.to_wire()) for o in message.options)


def _ede(message: dns.message.Message) -> list[int]:
    return sorted(int(o.code) for o in message.options if isinstance(o, dns.edns.EDEOption))


def _is_glue(rrset: dns.rrset.RRset, answer: list[dns.rrset.RRset]) -> bool:
    targets = {rr.target for r in answer if r.rdtype == dns.rdatatype.NS for rr in r}
    return rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) and rrset.name in targets


def differences(query: Query, ours: dns.message.Message, knot: dns.message.Message) -> list[str]:
    found = []

    def differ(what: str, a: object, b: object) -> None:
        if a != b:
            found.append(f"{what}: ours {a}, knot {b}")

    knot_rcode = knot.rcode()
    empty = query.name.lower() in EMPTY_NAMES
    if empty and (ours.rcode(), knot_rcode) == (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        knot_rcode = dns.rcode.NOERROR
    differ("rcode", ours.rcode(), knot_rcode)
    differ("opcode", ours.opcode(), knot.opcode())
    # CD: RFC 4035 §3.1.6 says an authoritative server MUST copy CD from the query into
    # the response, and we do; Knot 3.2 always answers CD=0 (see also the conformance
    # notes, §3 row 19). So CD is held to the query, not to Knot.
    differ("flags", _flags(ours, but=dns.flags.CD), _flags(knot, but=dns.flags.CD))
    if bool(ours.flags & dns.flags.CD) != bool(query.flags & dns.flags.CD):
        found.append(f"CD: the query's was {bool(query.flags & dns.flags.CD)}, ours is not")
    # Both must echo the question exactly as sent, its case included (0x20).
    differ("question", [q.to_text() for q in ours.question], [q.to_text() for q in knot.question])
    if not _same_rrsets(ours.answer, knot.answer):
        found.append(f"answer: ours {_text(ours.answer)}; knot {_text(knot.answer)}")
    if not _same_rrsets(ours.authority, knot.authority):
        found.append(f"authority: ours {_text(ours.authority)}; knot {_text(knot.authority)}")
    # Additional section: Knot adds the in-zone nameservers' addresses to an NS (or ANY)
    # answer; RFC 1034 §4.3.2 step 6 makes that optional ("may be useful"), and we give
    # minimal responses by design. So Knot may have exactly that glue more; anything
    # else in the section must be the same.
    extra = [r for r in knot.additional if not _is_glue(r, knot.answer)]
    if not _same_rrsets(ours.additional, extra) and not _same_rrsets(
        ours.additional, knot.additional
    ):
        found.append(f"additional: ours {_text(ours.additional)}; knot {_text(knot.additional)}")
    differ("edns version", ours.edns, knot.edns)
    if ours.edns >= 0 and knot.edns >= 0:
        differ("edns payload", ours.payload, knot.payload)
        differ(
            "edns flags",
            dns.flags.edns_to_text(ours.ednsflags),
            dns.flags.edns_to_text(knot.ednsflags),
        )
        # Extended DNS Errors (RFC 8914) are optional: Knot sends EDE 20 "Not Authoritative"
        # with REFUSED for names outside its zones; we may send none. When we send one, it
        # must be Knot's. Every other option must match.
        if _ede(ours):
            differ("extended errors", _ede(ours), _ede(knot))
        differ(
            "edns options",
            [o for o in _options(ours) if o[0] != EDE],
            [o for o in _options(knot) if o[0] != EDE],
        )
    return found


# -- the tests -------------------------------------------------------------------------


async def test_answers_agree_with_knot_serving_the_exported_zone(
    redis_url: str, tmp_path: Path
) -> None:
    binary = require_tool("knotd")
    async with populated(redis_url) as port:
        zone_file = tmp_path / f"{ZONE}.zone"
        printed = await export_zone(redis_url)
        assert await export_zone(redis_url, "--output", str(zone_file)) == ""
        assert _read(zone_file) == printed
        serial = serial_of(printed)
        await synced(port, serial)

        knot_port = free_port()
        conf = knot_conf(tmp_path, knot_port, zone_file)
        log = tmp_path / "knotd.log"
        with knotd(binary, conf, log) as process:
            await knot_serving(process, knot_port, serial, log)

            def compare() -> tuple[int, list[str], dict[tuple[str, str], list[str]]]:
                report, count = [], 0
                known: dict[tuple[str, str], list[str]] = {key: [] for key in KNOWN_BUGS}
                for name, rdtype in checklist():
                    for query in variants(name, rdtype):
                        count += 1
                        found = differences(query, ask(port, query), ask(knot_port, query))
                        if (name, rdtype) in KNOWN_BUGS:
                            known[name, rdtype] += found
                            found = [d for d in found if not d.startswith(KNOWN_BUG_SECTIONS)]
                        report += [f"{query}: {d}" for d in found]
                return count, report, known

            count, report, known = await asyncio.to_thread(compare)
        # The serial did not move while we compared: both answered the same registry.
        await synced(port, serial)
    assert count > 300
    assert not report, f"{len(report)} differences from Knot:\n" + "\n".join(report)
    fixed = [f"{name} {rdtype}" for (name, rdtype), found in known.items() if not found]
    assert not fixed, f"no longer differ from Knot, remove from KNOWN_BUGS: {fixed}"


async def test_export_for_a_region_is_what_its_clients_get(redis_url: str) -> None:
    """``--region``: the services as our server answers a client placed in that region."""
    services = ["api.production", "web.production", "batch.production", "pay.production"]
    services += ["static.production", "cache.staging", "db.staging", "queue.staging"]
    services += ["us-east-prod.api.production", "eu-west-prod.api.production"]
    async with populated(redis_url) as port:
        for region, source in [
            ("us-east-1", "127.0.1.1"),
            ("eu-west-1", "127.0.2.1"),
            ("ap-south-1", "127.0.3.1"),
        ]:
            text = await export_zone(redis_url, "--region", region)
            await synced(port, serial_of(text))
            zone = dns.zone.from_text(text, origin=ZONE, relativize=False)
            for owner in services:
                name = f"{owner}.{ZONE}."
                for rdtype in ("A", "AAAA"):
                    reply = await asyncio.to_thread(ask, port, Query(name, rdtype), source=source)
                    assert reply.rcode() == dns.rcode.NOERROR
                    expected = zone.get_rdataset(name, rdtype)
                    if expected is None:
                        assert reply.answer == [], (region, name, rdtype)
                        continue
                    [answer] = reply.answer
                    assert set(answer) == set(expected), (region, name, rdtype)
                    assert answer.ttl == expected.ttl, (region, name, rdtype)
        code, out, err = await run_export(redis_url, "--region", "mars-1")
    assert (code, out) == (2, "")
    assert "'mars-1' is not a region" in err
