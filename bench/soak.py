"""Soak: the production shape under faults for half an hour, checked answer by answer.

    .venv/bin/python bench/soak.py [--minutes 30] [--kill-every-s 300] [--flap-every-s 30]

Runs, as separate processes: the shipped Redis Sentinel topology (deploy/redis/: 1
primary, 2 replicas, 3 Sentinels; the harness of tests/sentinel.py), ``globaldns
registry`` (with a decision journal), ``globaldns resolver`` and one ``globaldns agent``
per cluster of the example topology, each probing real TCP listeners on loopback. Then:

* 300 DNS queries a second for ``api.production`` (100 from a client in each region) and
  10 a second for ``web.production``, every answer checked;
* every ``--flap-every-s`` one endpoint's listener closes for 10 s (it really goes down;
  the time is logged), rotating over the endpoints of eu-west and ap-south;
* every ``--kill-every-s`` the Redis primary is killed (SIGKILL; Sentinel fails over, the
  old primary comes back as a replica), and once, half-way to the first kill, an
  operator's ``SENTINEL FAILOVER``;
* operator decisions made at the start and expected to hold throughout: us-east-prod is
  drained, and ``web`` is overridden to fail over to ap-south-prod first.

Reports: queries for known names that failed (timeout, SERVFAIL, NXDOMAIN, empty;
target 0); answers naming an endpoint that had been down for longer than its detection
time (probe interval x fall + timeout + 1 s of propagation; target 0), split by whether a
Redis fault was under way; answers against an operator decision (target 0); and RSS of
every process over time (flat). Results go to bench/results/soak-<time>.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scale_procs import Processes, free_port, memory, start_http  # noqa: E402

from globaldns.redis_server import find_binary  # noqa: E402
from tests.helpers import ADMIN, TOKENS, TOPOLOGY_FILE  # noqa: E402
from tests.sentinel import SentinelTopology  # noqa: E402

CLUSTERS = ("us-east-prod", "eu-west-prod", "ap-south-prod")
CLIENTS = {"us-east-1": "127.0.1.1", "eu-west-1": "127.0.2.1", "ap-south-1": "127.0.3.1"}
DRAINED = "us-east-prod"
WEB_FIRST = "ap-south-prod"
ENDPOINTS = 3
INTERVAL_S, TIMEOUT_S, FALL = 0.5, 0.3, 2
DETECTION_S = INTERVAL_S * FALL + TIMEOUT_S + 1.0
FLAP_DOWN_S = 10.0
QPS_PER_CLIENT = 100


def address(cluster: str, service: str, i: int) -> str:
    return f"127.8{CLUSTERS.index(cluster) + 1}.{1 if service == 'api' else 2}.{i + 1}"


OWNER = {
    address(c, s, i): (c, s, i) for c in CLUSTERS for s in ("api", "web") for i in range(ENDPOINTS)
}


@dataclass
class Log:
    """What happened when (monotonic seconds from the start)."""

    t0: float = field(default_factory=time.monotonic)
    events: list[tuple[float, str]] = field(default_factory=list)
    down: dict[str, list[list[float]]] = field(default_factory=dict)
    """address → [down_at, up_at or inf] intervals."""
    faults: list[list[float]] = field(default_factory=list)
    """Redis fault windows: [fault, healthy again]."""

    def now(self) -> float:
        return time.monotonic() - self.t0

    def note(self, what: str) -> None:
        self.events.append((round(self.now(), 3), what))
        print(f"[{self.now():8.1f}s] {what}", flush=True)

    def down_for(self, addr: str, at: float) -> tuple[float, float]:
        """(since when ``addr`` is down, for how long) at ``at``; (-1, -1) when it is up."""
        for start, end in self.down.get(addr, ()):
            if start <= at < end:
                return start, at - start
        return -1.0, -1.0

    def in_fault(self, at: float) -> bool:
        return any(start <= at <= end + 5 for start, end in self.faults)


@dataclass
class Tally:
    queries: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    late: int = 0
    late_in_fault: int = 0
    against_decision: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    last_answered: dict[str, float] = field(default_factory=dict)
    """``<address>@<down since>`` → how long it had been down when last given out."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def example(self, text: str) -> None:
        """Keep the first few of each kind of problem (keyed by the text after the time)."""
        kind = text.split(" ", 1)[1].split(" down for")[0]
        if self.kinds[kind] < 3 and len(self.examples) < 100:
            self.examples.append(text)
        self.kinds[kind] += 1


def ask(sock: socket.socket, port: int, name: str, log: Log, tally: Tally, check_web: bool) -> None:
    query = dns.message.make_query(name, "A")
    sock.sendto(query.to_wire(), ("127.0.0.1", port))
    at = log.now()
    try:
        while True:
            data = sock.recv(4096)
            reply = dns.message.from_wire(data)
            if reply.id == query.id:
                break
    except (TimeoutError, OSError, dns.exception.DNSException) as exc:
        with tally.lock:
            tally.queries += 1
            tally.failed["timeout" if isinstance(exc, TimeoutError) else "error"] += 1
        return
    found = [
        rr.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for rr in rrset
    ]
    with tally.lock:
        tally.queries += 1
        if reply.rcode() != dns.rcode.NOERROR or not found:
            why = dns.rcode.to_text(reply.rcode()) if found or reply.rcode() else "empty"
            tally.failed[why] += 1
            tally.example(f"{at:.1f}s {name}: {why}")
            return
        for addr in found:
            cluster, _service, _i = OWNER.get(addr, ("?", "?", 0))
            if cluster == DRAINED:
                tally.against_decision["drained cluster answered"] += 1
                tally.example(f"{at:.1f}s {name}: drained {addr}")
            elif check_web and cluster != WEB_FIRST:
                tally.against_decision["override not followed"] += 1
                tally.example(f"{at:.1f}s {name}: override gave {addr}")
            since, down = log.down_for(addr, at)
            if down >= 0:
                key = f"{addr}@{since:.1f}"
                tally.last_answered[key] = max(tally.last_answered.get(key, 0.0), down)
            if down > DETECTION_S:
                fault = log.in_fault(at)
                if fault:
                    tally.late_in_fault += 1
                else:
                    tally.late += 1
                during = " (Redis fault)" if fault else ""
                tally.example(f"{at:.1f}s {name}: {addr} down for {down:.1f}s{during}")


def querier(
    port: int, client: str, name: str, qps: float, log: Log, tally: Tally, stop: threading.Event
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((client, 0))
        sock.settimeout(1.0)
        period = 1.0 / qps
        due = time.monotonic()
        while not stop.is_set():
            ask(sock, port, name, log, tally, check_web=name.startswith("web."))
            due += period
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                due = time.monotonic()


async def _close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


class Listeners:
    """One TCP listener per endpoint address: what the agents' probes connect to."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.servers: dict[str, asyncio.Server] = {}

    async def up(self, addr: str) -> None:
        self.servers[addr] = await asyncio.start_server(_close, addr, self.port)

    async def down(self, addr: str) -> None:
        server = self.servers.pop(addr)
        server.close()
        await server.wait_closed()

    async def close(self) -> None:
        for addr in list(self.servers):
            await self.down(addr)


def source_yaml(cluster: str, port: int) -> str:
    lines = ["services:"]
    for service in ("api", "web"):
        lines += [
            "  - namespace: production",
            f"    name: {service}",
            f"    ports: [{{name: http, port: {port}, protocol: TCP}}]",
            f"    probe: {{port: {port}, interval_s: {INTERVAL_S}, timeout_s: {TIMEOUT_S}, "
            f"rise: 2, fall: {FALL}}}",
            "    endpoints:",
        ]
        lines += [f"      - {{address: {address(cluster, service, i)}}}" for i in range(ENDPOINTS)]
    return "\n".join(lines) + "\n"


def rss_mb(pid: int) -> float:
    """The process's resident memory in MB (-1: it is gone)."""
    try:
        return round(memory(pid)["VmRSS"] / 2**20, 1)
    except (OSError, KeyError):
        return -1.0


async def admin(api: str, method: str, path: str, body: dict[str, Any]) -> None:
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, api + path, json=body, headers={"Authorization": f"Bearer {ADMIN}"}
        ) as r,
    ):
        if r.status != 200:
            raise RuntimeError(f"{method} {path}: {r.status} {await r.text()}")


async def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    log, tally = Log(), Tally()
    topology = SentinelTopology(find_binary(prefer_system=True), down_after_ms=args.down_after_ms)
    procs = Processes(workdir)
    listeners = Listeners(free_port())
    stop_queries = threading.Event()
    threads: list[threading.Thread] = []
    rss: list[dict[str, float]] = []
    await asyncio.to_thread(topology.start)
    try:
        for c in CLUSTERS:
            for s in ("api", "web"):
                for i in range(ENDPOINTS):
                    await listeners.up(address(c, s, i))
        exe = str(Path(sys.executable).with_name("globaldns"))
        chosen: dict[str, dict[str, str]] = {}
        base = {
            **os.environ,
            "GLOBALDNS_TOPOLOGY": str(TOPOLOGY_FILE),
            "GLOBALDNS_LOG_JSON": "false",
        }

        def registry_env() -> tuple[dict[str, str], str]:
            port = free_port()
            env = {
                **base,
                "GLOBALDNS_REDIS_URL": topology.url("registry"),
                "GLOBALDNS_PORT": str(port),
                "GLOBALDNS_CLUSTER_TOKENS": json.dumps(TOKENS),
                "GLOBALDNS_ADMIN_TOKEN": ADMIN,
                "GLOBALDNS_STATE_DIR": str(workdir / "registry-state"),
                "GLOBALDNS_ALLOW_LOOPBACK_ENDPOINTS": "true",  # the listeners are on 127.8x
            }
            chosen["registry"] = env
            return env, f"http://127.0.0.1:{port}/healthz"

        registry, _ = start_http(procs, "registry", [exe, "registry"], registry_env, timeout=30)
        api = f"http://127.0.0.1:{chosen['registry']['GLOBALDNS_PORT']}"

        def resolver_env() -> tuple[dict[str, str], str]:
            dns_port, http_port = free_port(), free_port()
            env = {
                **base,
                "GLOBALDNS_REDIS_URL": topology.url("resolver"),
                "GLOBALDNS_DNS_PORT": str(dns_port),
                "GLOBALDNS_HTTP_PORT": str(http_port),
                "GLOBALDNS_RRL_EXEMPT": json.dumps(["127.0.0.0/8"]),
            }
            chosen["resolver"] = env
            return env, f"http://127.0.0.1:{http_port}/healthz"

        resolver, _ = start_http(procs, "resolver", [exe, "resolver"], resolver_env, timeout=30)
        dns_port = int(chosen["resolver"]["GLOBALDNS_DNS_PORT"])
        http_port = int(chosen["resolver"]["GLOBALDNS_HTTP_PORT"])
        agents = []
        for c in CLUSTERS:
            source = workdir / f"{c}.yaml"
            source.write_text(source_yaml(c, listeners.port))
            env = {
                **base,
                "GLOBALDNS_CLUSTER": c,
                "GLOBALDNS_REGISTRY_URL": api,
                "GLOBALDNS_TOKEN": TOKENS[c],
                "GLOBALDNS_SOURCE": str(source),
            }
            agents.append(procs.start(f"agent-{c}", [exe, "agent"], env))
        await _wait(f"http://127.0.0.1:{http_port}/readyz", 60)
        await admin(api, "POST", f"/v1/clusters/{DRAINED}/drain", {"reason": "soak", "by": "soak"})
        await admin(
            api,
            "PUT",
            "/v1/services/production/web/policy",
            {"policy": {"kind": "failover", "order": [WEB_FIRST]}, "by": "soak"},
        )
        await asyncio.sleep(3)  # the decisions reach the resolver before checking begins
        log.note("queries start")
        for region, client in CLIENTS.items():
            for name, qps in (("api", QPS_PER_CLIENT), ("web", 10 / 3)):
                thread = threading.Thread(
                    target=querier,
                    args=(
                        dns_port,
                        client,
                        f"{name}.production.global.example.com",
                        qps,
                        log,
                        tally,
                        stop_queries,
                    ),
                    daemon=True,
                    name=f"q-{region}-{name}",
                )
                thread.start()
                threads.append(thread)
        watched = {"registry": registry, "resolver": resolver} | {a.name: a for a in agents}
        flappable = [
            address(c, s, i) for i in range(ENDPOINTS) for c in CLUSTERS[1:] for s in ("api",)
        ]
        end = args.minutes * 60
        # Faults fall between flaps (a third of the way), so that each flap's detection is
        # measured on its own; the fault windows' own flaps are counted apart anyway.
        next_flap, next_sample = args.flap_every_s, 0.0
        offset = args.flap_every_s / 3 if args.fault_offset_s is None else args.fault_offset_s
        next_kill = args.kill_every_s + offset
        manual_failover_at: float | None = args.kill_every_s / 2 + offset
        flaps = 0
        while log.now() < end:
            now = log.now()
            if now >= next_sample:
                rss.append({"t": round(now), **{n: rss_mb(p.pid) for n, p in watched.items()}})
                next_sample += 30
            if now >= next_flap:
                addr = flappable[flaps % len(flappable)]
                flaps += 1
                await listeners.down(addr)
                log.down.setdefault(addr, []).append([log.now(), float("inf")])
                log.note(f"endpoint {addr} down")
                asyncio.get_running_loop().call_later(
                    FLAP_DOWN_S, lambda a=addr: asyncio.ensure_future(_up(listeners, log, a))
                )
                next_flap += args.flap_every_s
            if manual_failover_at is not None and now >= manual_failover_at:
                manual_failover_at = None
                await _fault(topology, log, "SENTINEL FAILOVER")
            if now >= next_kill:
                await _fault(topology, log, "kill the primary")
                next_kill += args.kill_every_s
            await asyncio.sleep(0.2)
        stop_queries.set()
        for thread in threads:
            thread.join(timeout=5)
        rss.append({"t": round(log.now()), **{n: rss_mb(p.pid) for n, p in watched.items()}})
        dead = [n for n, p in watched.items() if not p.alive()]
    finally:
        stop_queries.set()
        procs.stop_all()
        await listeners.close()
        await asyncio.to_thread(topology.stop)
    return {
        "minutes": args.minutes,
        "queries": tally.queries,
        "failed": dict(tally.failed),
        "late_answers": tally.late,
        "late_answers_during_redis_faults": tally.late_in_fault,
        "against_decisions": dict(tally.against_decision),
        "detection_s": DETECTION_S,
        "given_out_while_down_s": tally.last_answered,
        "flaps": flaps,
        "flaps_down": {a: v for a, v in log.down.items()},
        "faults": log.faults,
        "processes_died": dead,
        "rss_mb": rss,
        "events": log.events,
        "examples": tally.examples,
    }


async def _up(listeners: Listeners, log: Log, addr: str) -> None:
    await listeners.up(addr)
    log.down[addr][-1][1] = log.now()
    log.note(f"endpoint {addr} up")


async def _fault(topology: SentinelTopology, log: Log, what: str) -> None:
    start = log.now()
    old = await asyncio.to_thread(topology.primary_port)
    if what == "kill the primary":
        topology.server(old).kill()
    else:
        await asyncio.to_thread(
            topology._ask_sentinel, topology.sentinels[0], "SENTINEL", "FAILOVER", "globaldns"
        )
    log.note(f"{what} ({old})")
    new = await asyncio.to_thread(topology.wait_failover, old)
    log.note(f"failed over to {new}")
    await asyncio.to_thread(topology.restore)
    log.faults.append([start, log.now()])
    log.note("topology healthy again")


async def _wait(url: str, timeout: float) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s")


def markdown(result: dict[str, Any], command: str) -> str:
    first, last = result["rss_mb"][0], result["rss_mb"][-1]
    rows = "\n".join(
        f"| {name} | {first[name]} | {max(r[name] for r in result['rss_mb'])} | {last[name]} |"
        for name in first
        if name != "t"
    )
    late = f"{result['late_answers']} (+ {result['late_answers_during_redis_faults']} in a fault)"
    worst = sorted(result["given_out_while_down_s"].values())
    flaps_seen = sum(len(v) for v in result["flaps_down"].values())
    never = flaps_seen - len(worst)
    detect = (
        f"{worst[len(worst) // 2]:.2f} / {worst[-1]:.2f} s (median / max over {len(worst)} "
        f"flaps; {never} never given out while down)"
        if worst
        else "no flap was ever given out while down"
    )
    against = f"{sum(result['against_decisions'].values())} {result['against_decisions'] or ''}"
    failed = f"{sum(result['failed'].values())} {result['failed'] or ''}"
    return f"""# Soak, {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}

`{command}` on {os.cpu_count()} cores.

| | result | target |
|---|---|---|
| minutes | {result["minutes"]} | 30 |
| queries for known names | {result["queries"]:,} | |
| failed | {failed} | 0 |
| answers naming an endpoint down > {result["detection_s"]:.1f} s | {late} | 0 |
| a down endpoint last given out, after it went down | {detect} | ≤ {result["detection_s"]:.1f} s |
| answers against an operator decision | {against} | 0 |
| endpoint flaps / Redis faults | {result["flaps"]} / {len(result["faults"])} | |
| processes that died | {result["processes_died"] or "none"} | none |

RSS (MB): start, max, end

| process | start | max | end |
|---|---|---|---|
{rows}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--kill-every-s", type=float, default=300.0)
    parser.add_argument("--flap-every-s", type=float, default=30.0)
    parser.add_argument(
        "--fault-offset-s",
        type=float,
        default=None,
        help="Redis faults this long after a flap (default: a third of the way to the next, "
        "so each flap's detection is measured alone; 0.5: a flap lands in the write gap)",
    )
    parser.add_argument("--down-after-ms", type=int, default=2000)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with tempfile.TemporaryDirectory(prefix="globaldns-soak-") as tmp:
        result = asyncio.run(soak(args, Path(tmp)))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    command = "python bench/soak.py " + " ".join(sys.argv[1:])
    (out / f"soak-{stamp}.json").write_text(json.dumps(result, indent=1) + "\n")
    report = markdown(result, command.strip())
    (out / f"soak-{stamp}.md").write_text(report)
    print(report)
    bad = (
        sum(result["failed"].values())
        + result["late_answers"]
        + sum(result["against_decisions"].values())
    )
    return 1 if bad or result["processes_died"] else 0


if __name__ == "__main__":
    sys.exit(main())
