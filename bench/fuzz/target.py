"""What the fuzz harness fuzzes, without atheris: one Responder and its invariants.

Shared by ``fuzz_handler.py`` (under atheris) and ``tests/resolver/test_fuzz_regressions.py``
(which replays the checked-in corpus and every saved crasher), so that an input that
broke the harness is replayed against exactly the same server.

The server is a realistic one: the example's three regions (two with a jurisdiction) and
client networks (plus a nested /25 and IPv6 networks, so ECS scopes get narrowed, and
networks that name their cluster), a latency table, three live clusters whose services
have IPv4 and IPv6 endpoints, some unhealthy, under every routing policy (geo with an
operator override, failover, weighted, residency, all, and nothing healthy), in-zone
nameservers with enough addresses to overflow 512 and 1232 octets, an NSID, a fixed
cookie secret and a fixed clock (so a replay answers the same way), and no RRL (it would
make answers depend on how many inputs came before).
"""

from __future__ import annotations

import struct

from registry.model import (
    ClusterState,
    Endpoint,
    Policy,
    PolicyOverride,
    ProbeState,
    Region,
    Service,
)
from resolver.geo import Locator
from resolver.respond import Options, Responder
from resolver.state import build
from resolver.zone import Zone

NOW_S = 1_000_000
ZONE = "global.example.com"

QR, RA, Z, AD = 0x8000, 0x0080, 0x0040, 0x0020
MAX_UDP = 1232

REGIONS = (
    Region(name="us-east-1", latitude=38.13, longitude=-78.45, jurisdiction="us"),
    Region(name="eu-west-1", latitude=53.35, longitude=-6.26, jurisdiction="eu"),
    Region(name="ap-south-1", latitude=19.08, longitude=72.88),
)
NETWORKS: tuple[tuple[str, str] | tuple[str, str, str], ...] = (
    ("127.0.1.0/24", "us-east-1", "us-east-prod"),
    ("127.0.2.0/24", "eu-west-1"),
    ("127.0.2.128/25", "ap-south-1"),
    ("127.0.3.0/24", "ap-south-1", "ap-south-prod"),
    ("2001:db8:aa::/48", "eu-west-1", "eu-west-prod"),
    ("2001:db8:aa:8000::/49", "ap-south-1"),
    ("2001:db8:bb::/48", "ap-south-1"),
)
LATENCY = {"ap-south-1": {"eu-west-1": 120.0, "us-east-1": 210.0}}

CLIENTS = (
    "127.0.0.1",
    "127.0.1.7",
    "127.0.2.1",
    "127.0.2.200",
    "127.0.3.9",
    "::1",
    "2001:db8:aa::1",
    "2001:db8:aa:8000::1",
    "2001:db8:bb::53",
    "::ffff:127.0.2.1",
    "192.0.2.77",
)
"""Sources the harness answers as; the last input byte picks one."""


def _cluster(name: str, region: str, n: int) -> ClusterState:
    """Services of every routing policy, each with IPv4 and/or IPv6 endpoints."""
    api = Service(
        namespace="production",
        name="api",
        endpoints=(
            *(Endpoint(address=f"10.{n}.0.{i}") for i in (1, 2, 3)),
            Endpoint(address=f"2001:db8:{n}::1"),
            Endpoint(address=f"2001:db8:{n}::2", probe=ProbeState(healthy=False)),
        ),
    )
    web = Service(
        namespace="production",
        name="web",
        endpoints=tuple(Endpoint(address=f"10.{n}.1.{i}") for i in range(10, 30)),
        ttl=30,
        policy=Policy(kind="failover", order=("eu-west-prod", "us-east-1"), min_healthy=5),
    )
    big = Service(
        namespace="staging",
        name="big",
        endpoints=(
            *(Endpoint(address=f"10.{n}.2.{i}") for i in range(1, 41)),
            *(Endpoint(address=f"2001:db8:{n}:1::{i:x}") for i in range(1, 41)),
        ),
        policy=Policy(
            kind="weighted", weights={"us-east-prod": 70, "eu-west-prod": 30, "ap-south-prod": 0}
        ),
    )
    db = Service(
        namespace="payments",
        name="db",
        endpoints=(
            Endpoint(address=f"2001:db8:{n}:2::1"),
            Endpoint(address=f"10.{n}.3.1", probe=ProbeState(healthy=n != 2)),
        ),
        policy=Policy(kind="residency"),
    )
    every = Service(
        namespace="production",
        name="every",
        endpoints=(Endpoint(address=f"10.{n}.4.1"), Endpoint(address=f"2001:db8:{n}:4::1")),
        policy=Policy(kind="all"),
    )
    down = Service(
        namespace="production",
        name="down",
        endpoints=(
            Endpoint(address=f"10.{n}.5.1", probe=ProbeState(healthy=False)),
            Endpoint(address=f"2001:db8:{n}:5::1", probe=ProbeState(healthy=False)),
        ),
        policy=Policy(when_all_unhealthy="none" if n == 1 else "all"),
    )
    return ClusterState(
        name=name,
        region=region,
        last_seen_ms=NOW_S * 1000,
        services=(api, web, big, db, every, down),
    )


def clusters() -> list[ClusterState]:
    return [
        _cluster("us-east-prod", "us-east-1", 1),
        _cluster("eu-west-prod", "eu-west-1", 2),
        _cluster("ap-south-prod", "ap-south-1", 3),
    ]


OVERRIDES = {
    "production/api": PolicyOverride(
        policy=Policy(kind="geo", min_healthy_fraction=0.5), reason="fuzz", by="bench"
    )
}


def build_responder() -> Responder:
    nameservers: dict[str, tuple[str, ...]] = {
        f"ns1.{ZONE}": ("127.0.0.1", "::1"),
        f"ns2.{ZONE}": tuple(f"192.0.2.{i}" for i in range(1, 41)),
        f"ns3.{ZONE}": tuple(f"2001:db8:53::{i:x}" for i in range(1, 61)),
    }
    for i in range(20):
        nameservers[f"ns{i}.provider-{i:02d}-with-a-rather-long-name.example.net"] = ()
    zone = Zone(name=ZONE, ttl=5, negative_ttl=5, nameservers=nameservers)
    locator = Locator(NETWORKS, "us-east-1")
    options = Options(
        nsid=b"gdns-fuzz-1",
        cookie_secret=b"fuzz-cookie-secret-0123456789ab",
        rrl=None,
        ecs_trusted=("0.0.0.0/0", "::/0"),  # every client subnet takes the full path
    )
    responder = Responder(
        zone, locator, REGIONS, options, latency=LATENCY, clock=lambda: float(NOW_S)
    )
    snapshot = build(
        clusters(),
        generation=7,
        sync_ms=NOW_S * 1000,
        lease_ttl_ms=6000,
        policies=OVERRIDES,
    )
    responder.swap(snapshot)
    return responder


def client_for(data: bytes) -> str:
    return CLIENTS[data[-1] % len(CLIENTS)] if data else CLIENTS[0]


class InvariantBroken(AssertionError):
    pass


class InternalError(AssertionError):
    """Our code raised inside handle() and it was contained as SERVFAIL: still a bug."""


def check(responder: Responder, data: bytes, client: str, *, tcp: bool) -> bytes | None:
    """One call of handle(), with the invariants of the conformance notes checked cheaply."""
    before = responder.stats["internal_error"]
    out = responder.handle(data, client, tcp=tcp)
    if responder.stats["internal_error"] != before:
        raise InternalError(
            f"internal error (tcp={tcp}, client={client!r}) on input {data.hex()}:\n"
            f"{responder.last_error}"
        )
    if out is None:
        return None
    where = f"(tcp={tcp}, client={client!r}) on input {data.hex()}"
    if not isinstance(out, bytes):
        raise InvariantBroken(f"handle() returned {type(out).__name__} {where}")
    if len(data) < 12 or data[2] & 0x80:
        raise InvariantBroken(f"answered a runt or a response {where}: {out.hex()}")
    if len(out) < 12:
        raise InvariantBroken(f"response shorter than a header {where}: {out.hex()}")
    if out[:2] != data[:2]:
        raise InvariantBroken(f"response ID differs {where}: {out.hex()}")
    (flags,) = struct.unpack_from("!H", out, 2)
    if not flags & QR:
        raise InvariantBroken(f"QR clear in the response {where}: {out.hex()}")
    if flags & (RA | Z | AD):
        raise InvariantBroken(f"RA, Z or AD set in the response {where}: {out.hex()}")
    if not tcp and len(out) > MAX_UDP:
        raise InvariantBroken(f"UDP response of {len(out)} octets {where}")
    if tcp and len(out) > 0xFFFF:
        raise InvariantBroken(f"TCP response of {len(out)} octets {where}")
    return out
