"""A resolver's real UDP/TCP servers on a free port, in a thread, with a fixed snapshot.

The conformance battery sends hundreds of odd packets; it needs the real sockets and the
real server code, not Redis, so the snapshot is built directly.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from registry.model import ClusterState, Endpoint, Service
from resolver import sockets
from resolver.main import build_responder
from resolver.respond import Responder
from resolver.server import TcpServer, UdpServer
from resolver.settings import ResolverSettings
from resolver.state import build
from tests.helpers import TOPOLOGY_FILE, topology

NOW = 1_000_000


def snapshot_clusters() -> list[ClusterState]:
    def cluster(name: str, region: str, prefix: str, v6: str) -> ClusterState:
        api = Service(
            namespace="production",
            name="api",
            endpoints=(
                *(Endpoint(address=f"{prefix}.{i}") for i in (1, 2, 3)),
                Endpoint(address=f"{v6}::1"),
            ),
        )
        web = Service(
            namespace="production",
            name="web",
            endpoints=tuple(Endpoint(address=f"{prefix}.{i}") for i in range(10, 30)),
        )
        return ClusterState(name=name, region=region, last_seen_ms=NOW, services=(api, web))

    return [
        cluster("us-east-prod", "us-east-1", "10.1.0", "2001:db8:1"),
        cluster("eu-west-prod", "eu-west-1", "10.2.0", "2001:db8:2"),
        cluster("ap-south-prod", "ap-south-1", "10.3.0", "2001:db8:3"),
    ]


@dataclass
class Running:
    port: int
    responder: Responder
    tcp: TcpServer


@contextmanager
def running_server(**settings: object) -> Iterator[Running]:
    settings = {"ecs_trusted": ("127.0.0.0/8",), **settings}  # its rows use client subnets
    config = ResolverSettings(topology=TOPOLOGY_FILE, **settings)  # type: ignore[arg-type]
    responder = build_responder(config, topology())
    responder.swap(build(snapshot_clusters(), generation=7, sync_ms=NOW, lease_ttl_ms=6000))
    udp_sock, tcp_sock = sockets.pair("127.0.0.1", 0)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop: asyncio.Event | None = None
    holder: dict[str, object] = {}

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        udp = UdpServer(udp_sock, responder)
        tcp = TcpServer.configured(responder, config)
        await tcp.start(tcp_sock)
        holder["tcp"] = tcp
        ready.set()
        await stop.wait()
        udp.close()
        await tcp.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait(5)
    try:
        yield Running(udp_sock.getsockname()[1], responder, holder["tcp"])  # type: ignore[arg-type]
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
