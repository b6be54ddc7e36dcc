"""The synthetic world bench/scale.py builds: clusters, services, endpoints, report bodies.

Pure and deterministic: the same scenario always gives the same names and addresses, so
a run can be compared with the next one. Nothing here does I/O.

* Clusters ``c00``, ``c01``, … spread round-robin over real cloud regions of the built-in
  catalogue (3 clusters: one per region; 30 clusters: 3 per region over 10 regions).
  Each cluster has a client network ``100.64.<i>.0/24`` naming it, so a query carrying
  that subnet as EDNS Client Subnet is answered from that cluster's endpoints first
  (the geo policy's "the client's own cluster").
* Services ``s00000.bench``, … with one port; every cluster exports every service; each
  service has ``endpoints`` addresses, unique across the whole world (10.0.0.0/8 holds
  16.7M, enough for 100 x 10,000 x 10).
* The first :attr:`Scenario.flip_services` services are *flip services*: only their first
  8 endpoints are ready (the rest stay not-ready), so their answer for a client of the
  cluster is exactly the ready set (the resolver answers at most 8 records, rotated):
  "is address X in the answer" then tells reliably whether a flip of X is live. The
  other services take the background churn.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

ZONE = "global.example.com"
NAMESPACE = "bench"
PORT = {"name": "http", "port": 8080, "protocol": "TCP"}
MAX_ANSWERS = 8  # resolver.policy.MAX_ANSWERS
BASE_ADDRESS = int(ipaddress.IPv4Address("10.0.0.0"))
REGIONS = (
    "us-east-1",
    "eu-west-1",
    "ap-south-1",
    "us-west-2",
    "eu-central-1",
    "ap-northeast-1",
    "sa-east-1",
    "ap-southeast-2",
    "ca-central-1",
    "eu-north-1",
)


@dataclass(frozen=True)
class Scenario:
    """A registry size: ``clusters`` x ``services`` x ``endpoints``."""

    key: str
    clusters: int
    services: int
    endpoints: int

    @property
    def total_endpoints(self) -> int:
        return self.clusters * self.services * self.endpoints

    @property
    def label(self) -> str:
        return f"{self.clusters} x {self.services:,} x {self.endpoints} = {self.total_endpoints:,}"

    @property
    def flip_services(self) -> int:
        """Services reserved for the propagation flips (the rest take the churn)."""
        return max(1, min(100, self.services // 2))

    def cluster_names(self) -> list[str]:
        return [cluster_name(i) for i in range(self.clusters)]

    def regions(self) -> list[str]:
        count = self.clusters if self.clusters <= 3 else max(3, self.clusters // 3)
        return list(REGIONS[: min(len(REGIONS), count)])


def cluster_name(i: int) -> str:
    return f"c{i:02d}"


def service_name(j: int) -> str:
    return f"s{j:05d}"


def cluster_subnet(i: int) -> str:
    """The client network of cluster ``i`` (sent as EDNS Client Subnet)."""
    return f"100.64.{i}.0"


def address(scenario: Scenario, cluster: int, service: int, endpoint: int) -> str:
    index = (cluster * scenario.services + service) * scenario.endpoints + endpoint
    return str(ipaddress.IPv4Address(BASE_ADDRESS + 1 + index))


def qname(service: int) -> str:
    return f"{service_name(service)}.{NAMESPACE}.{ZONE}"


def topology_yaml(scenario: Scenario) -> str:
    regions = scenario.regions()
    lines = ["# written by bench/scale.py", "regions:"]
    lines += [f"  {r}: {{}}" for r in regions]  # coordinates from the built-in catalogue
    lines.append("clusters:")
    for i in range(scenario.clusters):
        lines.append(f"  {cluster_name(i)}: {{region: {regions[i % len(regions)]}}}")
    lines.append("networks:")
    for i in range(scenario.clusters):
        lines.append(f"  {cluster_subnet(i)}/24: {cluster_name(i)}")
    lines.append(f"default_region: {regions[0]}")
    return "\n".join(lines) + "\n"


def initially_ready(scenario: Scenario, service: int, endpoint: int) -> bool:
    return service >= scenario.flip_services or endpoint < MAX_ANSWERS


def service_record(
    scenario: Scenario, cluster: int, service: int, not_ready: frozenset[int] = frozenset()
) -> dict[str, object]:
    """One service as a cluster reports it; ``not_ready`` flips endpoints from their default."""
    endpoints = []
    for e in range(scenario.endpoints):
        ready = initially_ready(scenario, service, e) != (e in not_ready)
        endpoints.append(
            {"address": address(scenario, cluster, service, e), "conditions": {"ready": ready}}
        )
    return {
        "namespace": NAMESPACE,
        "name": service_name(service),
        "ports": [PORT],
        "endpoints": endpoints,
    }


def whole_state_chunks(
    scenario: Scenario,
    cluster: int,
    seq: int,
    not_ready: Mapping[int, frozenset[int]] | None = None,
) -> Iterator[bytes]:
    """A cluster's whole-state report as JSON, in pieces (a 3M world does not fit twice)."""
    flipped = not_ready or {}
    yield b'{"seq": %d, "services": [' % seq
    for j in range(scenario.services):
        record = service_record(scenario, cluster, j, flipped.get(j, frozenset()))
        piece = json.dumps(record, separators=(",", ":"))
        yield (piece if j == 0 else "," + piece).encode()
    yield b"]}"


def delta_body(*, seq: int, base_seq: int, service: dict[str, object], observed_ms: int) -> bytes:
    """A delta report upserting one service whole, as an agent sends it (compact JSON)."""
    body = {"seq": seq, "base_seq": base_seq, "services": [service], "observed_ms": observed_ms}
    return json.dumps(body, separators=(",", ":")).encode()


def gzipped(chunks: Iterator[bytes], level: int = 6) -> tuple[bytes, int]:
    """The gzip body of ``chunks`` and the size before compression."""
    import zlib

    packer = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: gzip framing
    parts, raw = [], 0
    for chunk in chunks:
        raw += len(chunk)
        parts.append(packer.compress(chunk))
    parts.append(packer.flush())
    return b"".join(parts), raw
