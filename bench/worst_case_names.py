"""How long one query takes against a service at the model's limits, for names that miss
every cache: the issue-10 attack (random SRV names against a huge report).

The responder (no sockets, no Redis) holds one service of 1,000 endpoints, each with 100
ports of its own (nothing shared), and is asked names no cache holds: SRV names that do not
exist, SRV names that do (after the first), names under the service that are neither a
cluster nor an endpoint, and SRV targets. For each kind it prints the median and the
worst time per query, beside the same against a service of 16 endpoints.

It is a report, not a test (tests/resolver/test_bounded_work.py holds the bound, counting
steps rather than time):

    .venv/bin/python bench/worst_case_names.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import dns.message

from registry import topology as topology_mod
from registry.model import (
    MAX_ENDPOINTS_PER_SERVICE,
    MAX_PORTS,
    ClusterState,
    Endpoint,
    Port,
    Service,
)
from resolver.main import build_responder
from resolver.respond import Responder
from resolver.settings import ResolverSettings
from resolver.state import build

TOPOLOGY_FILE = Path(__file__).resolve().parent.parent / "deploy" / "examples" / "topology.yaml"
NAME = "api.production.global.example.com"
CLIENT = "127.0.1.1"
NOW = 1_000_000
QUERIES = 200


def address(i: int) -> str:
    return f"10.{i // 250}.{i % 250}.1" if i < 500 else f"2001:db8::{i:x}"


def service(indices: list[int]) -> Service:
    return Service(
        namespace="production",
        name="api",
        endpoints=tuple(
            Endpoint(
                address=address(i),
                ports=tuple(
                    Port(name=f"p{j}", port=1 + (i * MAX_PORTS + j) % 65535)
                    for j in range(MAX_PORTS)
                ),
            )
            for i in indices
        ),
    )


def responder(svc: Service) -> Responder:
    r = build_responder(
        ResolverSettings(topology=TOPOLOGY_FILE, rrl_rate=0), topology_mod.load(TOPOLOGY_FILE)
    )
    cluster = ClusterState(
        name="us-east-prod", region="us-east-1", last_seen_ms=NOW, services=(svc,)
    )
    r.swap(build([cluster], generation=1, sync_ms=NOW, lease_ttl_ms=6000))
    r.handle(dns.message.make_query(f"_p0._tcp.{NAME}", "SRV").to_wire(), CLIENT)
    return r


KINDS: dict[str, Callable[[int], tuple[str, str]]] = {
    "SRV name that does not exist": lambda i: (f"_x{i}._tcp.{NAME}", "SRV"),
    "SRV name that exists": lambda i: (f"_p{1 + i % (MAX_PORTS - 1)}._tcp.{NAME}", "SRV"),
    "name under the service": lambda i: (f"c{i}.{NAME}", "A"),
    "SRV target": lambda i: (f"{address(i % 500).replace('.', '-')}.{NAME}", "A"),
}


def timed(r: Responder, kind: Callable[[int], tuple[str, str]]) -> list[float]:
    times = []
    for i in range(QUERIES):
        if i % 50 == 0:
            r.invalidate(["api.production"])  # a change now and then: decided again
        name, rdtype = kind(i)
        wire = dns.message.make_query(name, rdtype).to_wire()
        started = time.perf_counter()
        r.handle(wire, CLIENT)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    big = responder(service(list(range(MAX_ENDPOINTS_PER_SERVICE))))
    small = responder(service([*range(8), *range(500, 508)]))
    print(f"{'names that miss the cache':32} {'1000 x 100 ports':>22} {'16 endpoints':>22}")
    for label, kind in KINDS.items():
        cells = []
        for r in (big, small):
            times = timed(r, kind)
            cells.append(f"{statistics.median(times) * 1e6:8.0f} µs (max {max(times) * 1e6:6.0f})")
        print(f"{label:32} {cells[0]:>22} {cells[1]:>22}")


if __name__ == "__main__":
    main()
