"""Issue #10's abusive clients, bugs 5 to 7, measured against the real server processes.

    .venv/bin/python bench/abuse.py [--only 5a,5b,6a,6b,7] [--root PATH] [--hold-s 120]

``--root`` runs the servers from another checkout (the same script measures the code
before a change and after it: ``git worktree add /tmp/before <commit>``); the clients
here use only sockets, aiohttp and dnspython. Each server is a process of its own (as in
production), started from ``ROOT`` with ``GLOBALDNS_*`` settings, on loopback:

* **5a** a DNS-over-TCP client pipelines 100,000 queries and never reads: how long the
  resolver keeps the connection (``--hold-s`` at most);
* **5b** 32 sources x 32 connections (127.0.8.1-32) fill the resolver's TCP cap, each
  asking a question every 2 s and reconnecting whenever closed, while 16 other sources
  each ask 10 questions over TCP: how many are answered;
* **6a** 30 idle, 30 half-sent-head and 30 half-sent-body connections to the registry:
  how long each kind is held (``--hold-s`` at most);
* **6b** the registry under a file limit (``ulimit -n 128``) and 150 idle connections:
  how many of 20 heartbeats, each on a new connection as after an agent restart, are
  answered (``GLOBALDNS_HTTP_MAX_CONNECTIONS=64`` is set; code without the setting
  ignores it);
* **7** 8 concurrent posters flood whole states (2,000 services) for one cluster for
  ``--flood-s``, once waiting for each 429's ``Retry-After`` as an agent does, once
  not, while another cluster heartbeats every 0.2 s: its heartbeats' latency, and the
  longest gap between two answered ones (over the 6 s lease, the cluster would have
  gone stale).

Numbers for the issue note and README; the behaviour itself is asserted by
``tests/registry/test_fairness.py``, ``test_httpguard.py`` and
``tests/resolver/test_server.py``, which never assert speed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import shlex
import socket
import statistics
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from scale_procs import Processes, free_port, start_http  # noqa: E402

from globaldns.redis_server import RedisProcess, find_binary  # noqa: E402

ZONE = "global.example.com"
TOKENS = {
    "us-east-prod": "bench-us-east-token-0123456789",
    "eu-west-prod": "bench-eu-west-token-0123456789",
    "ap-south-prod": "bench-ap-south-token-0123456789",
}
IDLE = 150
"""Bug 6b: idle connections opened to a registry limited to 128 file descriptors."""
TCP_CLOSE = 7
TCP_CLOSE_WAIT = 8


def command(root: Path, component: str, fd_limit: int | None) -> list[str]:
    code = f"import sys; sys.path.insert(0, {str(root)!r}); from globaldns.cli import main; "
    code += f"sys.exit(main([{component!r}]))"
    line = shlex.join([sys.executable, "-c", code])
    if fd_limit is not None:
        line = f"ulimit -n {fd_limit} && exec {line}"
    return ["sh", "-c", line]


@contextlib.asynccontextmanager
async def server(
    procs: Processes,
    root: Path,
    component: str,
    env: dict[str, str],
    *,
    fd_limit: int | None = None,
) -> AsyncIterator[dict[str, int]]:
    """The registry or the resolver from ``root``; yields its ports."""
    ports: dict[str, int] = {}
    base = {
        "GLOBALDNS_TOPOLOGY": str(root / "deploy" / "examples" / "topology.yaml"),
        "GLOBALDNS_CLUSTER_TOKENS": json.dumps(TOKENS),
        "GLOBALDNS_LOG_JSON": "true",
        "PATH": "/usr/bin:/bin",
        **env,
    }

    def env_for() -> tuple[dict[str, str], str]:
        if component == "registry":
            ports["http"] = free_port()
            return {**base, "GLOBALDNS_PORT": str(ports["http"])}, (
                f"http://127.0.0.1:{ports['http']}/healthz"
            )
        ports["dns"], ports["http"] = free_port(), free_port()
        extra = {"GLOBALDNS_DNS_PORT": str(ports["dns"]), "GLOBALDNS_HTTP_PORT": str(ports["http"])}
        return {**base, **extra}, f"http://127.0.0.1:{ports['http']}/healthz"

    proc, _ = await asyncio.to_thread(
        start_http, procs, component, command(root, component, fd_limit), env_for, timeout=30
    )
    try:
        yield ports
    finally:
        await asyncio.to_thread(procs.stop, proc)


def tcp_state(sock: socket.socket) -> int:
    return int(struct.unpack("B", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1))[0])


async def held_for(sock: socket.socket, opened: float, limit: float) -> float | None:
    """Seconds until the server closed ``sock`` (FIN or RST); None: still open at ``limit``."""
    while time.monotonic() - opened < limit:
        if tcp_state(sock) in (TCP_CLOSE, TCP_CLOSE_WAIT):
            return time.monotonic() - opened
        await asyncio.sleep(0.05)
    return None


def describe_holds(holds: list[float | None], limit: float) -> str:
    closed = sorted(h for h in holds if h is not None)
    still = len(holds) - len(closed)
    parts = [f"{len(closed)}/{len(holds)} closed by the server"]
    if closed:
        parts.append(f"after {closed[0]:.1f}-{closed[-1]:.1f} s")
    if still:
        parts.append(f"{still} still open at {limit:.0f} s")
    return ", ".join(parts)


async def connect(port: int, source: str = "127.0.0.1", rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((source, 0))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


# -- bug 5: DNS over TCP -------------------------------------------------------------------


async def bug_5a(procs: Processes, root: Path, redis_url: str, hold_s: float) -> str:
    async with server(procs, root, "resolver", {"GLOBALDNS_REDIS_URL": redis_url}) as ports:
        sock = await connect(ports["dns"], rcvbuf=4096)
        query = dns.message.make_query(ZONE, "SOA").to_wire()
        blob = (len(query).to_bytes(2, "big") + query) * 100_000
        opened = time.monotonic()
        sending = asyncio.create_task(asyncio.get_running_loop().sock_sendall(sock, blob))
        held = await held_for(sock, opened, hold_s)
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await sending
        sock.close()
    return "a TCP client that never reads: " + describe_holds([held], hold_s)


async def bug_5b(procs: Processes, root: Path, redis_url: str, seconds: float = 15.0) -> str:
    env = {"GLOBALDNS_REDIS_URL": redis_url}
    async with server(procs, root, "resolver", env) as ports:
        port, stop = ports["dns"], asyncio.Event()
        opened = Counter[str]()

        async def hold(source: str) -> None:
            """One connection that asks a question every 2 s (under the idle timeout) and
            reads the answer: a client the server has no reason to close."""
            query = dns.message.make_query(ZONE, "SOA").to_wire()
            while not stop.is_set():
                try:
                    reader, writer = await asyncio.open_connection(sock=await connect(port, source))
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                opened["connections"] += 1
                try:
                    while not stop.is_set():
                        writer.write(len(query).to_bytes(2, "big") + query)
                        size = int.from_bytes(await reader.readexactly(2), "big")
                        await reader.readexactly(size)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), 2.0)
                except (OSError, asyncio.IncompleteReadError):
                    pass
                finally:
                    writer.close()

        holders = [
            asyncio.create_task(hold(f"127.0.8.{s}")) for s in range(1, 33) for _ in range(32)
        ]
        await asyncio.sleep(3)  # the cap fills
        outcomes = Counter[str]()

        async def ask(source: str) -> None:
            for _ in range(10):
                query = dns.message.make_query(ZONE, "SOA")
                try:
                    reply = await dns.asyncquery.tcp(
                        query, "127.0.0.1", port=port, source=source, timeout=2
                    )
                    outcomes[dns.rcode.to_text(reply.rcode())] += 1
                except (OSError, EOFError, dns.exception.Timeout) as exc:
                    outcomes[type(exc).__name__] += 1
                await asyncio.sleep(seconds / 10)

        await asyncio.gather(*(ask(f"127.0.9.{s}") for s in range(1, 17)))
        stop.set()
        await asyncio.gather(*holders, return_exceptions=True)
    answered = outcomes.pop("NOERROR", 0)
    return (
        f"32x32 busy connections ({opened['connections']} opened in all): "
        f"{answered}/160 questions from 16 other sources answered"
        + (f" (failed: {dict(outcomes)})" if outcomes else "")
    )


# -- bug 6: HTTP connections to the registry ------------------------------------------------


async def bug_6a(procs: Processes, root: Path, redis_url: str, hold_s: float) -> str:
    token = TOKENS["eu-west-prod"].encode()
    heads = {
        "idle": b"",
        "half-sent head": b"POST /v1/heartbeats HTTP/1.1\r\nHost: registry\r\n",
        "half-sent body": b"POST /v1/heartbeats HTTP/1.1\r\nHost: registry\r\nAuthorization: "
        b"Bearer " + token + b"\r\nContent-Type: application/json\r\nContent-Length: 100"
        b"\r\n\r\n{",
    }
    async with server(procs, root, "registry", {"GLOBALDNS_REDIS_URL": redis_url}) as ports:
        loop = asyncio.get_running_loop()
        kinds: dict[str, list[asyncio.Task[float | None]]] = {}
        socks = []
        for kind, head in heads.items():
            for _ in range(30):
                sock = await connect(ports["http"])
                if head:
                    await loop.sock_sendall(sock, head)
                socks.append(sock)
                kinds.setdefault(kind, []).append(
                    asyncio.create_task(held_for(sock, time.monotonic(), hold_s))
                )
        lines = []
        for kind, tasks in kinds.items():
            lines.append(f"  {kind:15} {describe_holds(await asyncio.gather(*tasks), hold_s)}")
        for sock in socks:
            sock.close()
    return "registry connections held:\n" + "\n".join(lines)


async def bug_6b(procs: Processes, root: Path, redis_url: str) -> str:
    env = {"GLOBALDNS_REDIS_URL": redis_url, "GLOBALDNS_HTTP_MAX_CONNECTIONS": "64"}
    async with server(procs, root, "registry", env, fd_limit=128) as ports:
        api = f"http://127.0.0.1:{ports['http']}"
        headers = {"Authorization": f"Bearer {TOKENS['eu-west-prod']}"}
        async with aiohttp.ClientSession() as s:
            body = {"seq": 1, "services": []}
            async with s.post(f"{api}/v1/reports", json=body, headers=headers) as r:
                assert r.status == 200, await r.text()
        idle = [await connect(ports["http"]) for _ in range(IDLE)]
        outcomes = Counter[str]()
        for _ in range(20):
            timeout = aiohttp.ClientTimeout(total=5)
            try:
                async with (
                    aiohttp.ClientSession(timeout=timeout) as fresh,
                    fresh.post(f"{api}/v1/heartbeats", json={"seq": 1}, headers=headers) as r,
                ):
                    outcomes[str(r.status)] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcomes[type(exc).__name__] += 1
        for sock in idle:
            sock.close()
    return (
        f"registry with 128 file descriptors and {IDLE} idle connections: "
        f"{outcomes.pop('200', 0)}/20 heartbeats on new connections answered"
        + (f" (others: {dict(outcomes)})" if outcomes else "")
    )


# -- bug 7: one cluster's reports against another's heartbeats -------------------------------


def whole_state(services: int) -> bytes:
    """A whole state with ``SEQ`` where the seq goes."""
    body = {
        "seq": 0,
        "services": [
            {
                "namespace": "production",
                "name": f"svc-{i}",
                "ports": [{"name": "http", "port": 8080}],
                "endpoints": [
                    {"address": f"10.{i // 250}.{i % 250}.{e}", "conditions": {"ready": True}}
                    for e in (1, 2)
                ],
            }
            for i in range(services)
        ],
    }
    return json.dumps(body).replace('"seq": 0', '"seq": SEQ', 1).encode()


async def bug_7(
    procs: Processes, root: Path, redis_url: str, flood_s: float, *, patient: bool
) -> str:
    template = whole_state(2000)
    async with server(procs, root, "registry", {"GLOBALDNS_REDIS_URL": redis_url}) as ports:
        api = f"http://127.0.0.1:{ports['http']}"
        us = {"Authorization": f"Bearer {TOKENS['us-east-prod']}"}
        eu = {"Authorization": f"Bearer {TOKENS['eu-west-prod']}"}
        statuses = Counter[str]()
        beats: list[tuple[float, float, int]] = []
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            async with s.post(f"{api}/v1/reports", json={"seq": 1}, headers=eu) as r:
                assert r.status == 200, await r.text()
            start = time.monotonic()
            end = start + flood_s

            async def flood(poster: int) -> None:
                n = 0
                while time.monotonic() < end:
                    n += 1
                    body = template.replace(b"SEQ", str(time.time_ns() + poster).encode())
                    headers = {**us, "Content-Type": "application/json"}
                    try:
                        async with s.post(f"{api}/v1/reports", data=body, headers=headers) as r:
                            statuses[str(r.status)] += 1
                            await r.read()
                            if r.status == 429 and patient:
                                await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                    except aiohttp.ClientError as exc:
                        statuses[type(exc).__name__] += 1

            async def heartbeat() -> None:
                while time.monotonic() < end:
                    t0 = time.monotonic()
                    try:
                        async with s.post(
                            f"{api}/v1/heartbeats",
                            json={"seq": 1},
                            headers=eu,
                            timeout=aiohttp.ClientTimeout(total=30),
                        ) as r:
                            status = r.status
                    except (aiohttp.ClientError, TimeoutError):
                        status = 0
                    beats.append((t0, time.monotonic(), status))
                    await asyncio.sleep(max(0.0, 0.2 - (time.monotonic() - t0)))

            await asyncio.gather(heartbeat(), *(flood(p) for p in range(8)))
    latencies = sorted(done - sent for sent, done, status in beats if status == 200)
    answered = [done for _, done, status in beats if status == 200]
    # From the flood's start to its end, how long the lease went unrenewed at most.
    gaps = [b - a for a, b in itertools.pairwise([start, *answered, max(end, *answered)])]
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [0.0] * 99
    return (
        f"8 posters of whole states (2,000 services, {len(template) // 1024} KiB) for "
        f"{flood_s:.0f} s, {'waiting' if patient else 'not waiting'} for a 429's Retry-After: "
        f"reports {dict(statuses)}; the other cluster's heartbeats: "
        f"{len(answered)}/{len(beats)} answered, p50 {q[49] * 1000:.0f} ms, "
        f"p99 {q[98] * 1000:.0f} ms, max {max(latencies, default=0) * 1000:.0f} ms, longest "
        f"gap between answers {max(gaps, default=0):.2f} s (lease 6 s)"
    )


async def main(args: argparse.Namespace, root: Path) -> None:
    only = set(args.only.split(",")) if args.only else {"5a", "5b", "6a", "6b", "7"}
    redis = RedisProcess(binary=find_binary(prefer_system=True))
    redis.start()
    with tempfile.TemporaryDirectory(prefix="abuse-") as workdir:
        procs = Processes(Path(workdir))
        try:
            print(f"servers from {root}")
            if "5a" in only:
                print("5a", await bug_5a(procs, root, redis.url, args.hold_s), flush=True)
            if "5b" in only:
                print("5b", await bug_5b(procs, root, redis.url), flush=True)
            if "6a" in only:
                print("6a", await bug_6a(procs, root, redis.url, args.hold_s), flush=True)
            if "6b" in only:
                print("6b", await bug_6b(procs, root, redis.url), flush=True)
            if "7" in only:
                for patient in (True, False):
                    flood = await bug_7(procs, root, redis.url, args.flood_s, patient=patient)
                    print("7 ", flood, flush=True)
        finally:
            procs.stop_all()
            redis.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(HERE.parent), help="checkout to run servers from")
    parser.add_argument("--only", help="comma-separated: 5a,5b,6a,6b,7")
    parser.add_argument("--hold-s", type=float, default=120.0, help="longest wait for a close")
    parser.add_argument("--flood-s", type=float, default=20.0, help="how long bug 7's flood runs")
    arguments = parser.parse_args()
    asyncio.run(main(arguments, Path(arguments.root).resolve()))
