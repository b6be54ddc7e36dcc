"""How fast globaldns answers, as ratios against Knot measured in the same run.

The real resolver (``resolver.server.UdpServer`` on the real ``Responder``, uvloop when
installed, a fixed snapshot of 3 clusters x 5 services, no Redis, no RRL) and Knot (one
UDP worker, no RRL, an equivalent static zone: the same names, 3 A records with TTL 5 per
service, the same SOA) each run in a subprocess pinned to CPU 0. The load generator runs
on CPU 1: dnsperf when it is installed, else a Python generator of this file. Each server
gets, per run, a closed-loop load (``dnsperf -c 10 -q 100``: what it can do at most) and a
fixed-rate load (``dnsperf -Q RATE``: latency when it is not saturated). The server's
CPU time (user + system of its process tree, from /proc) divided by the answers it gave
is its cost per query. Medians of the runs, and the ratios globaldns / Knot, are printed
and written to bench/results/.

It is a report, not a test: the exit status is 0 whatever the numbers, and 1 only when a
server or the load generator cannot be started. See bench/README.md for how to read it.

    .venv/bin/python bench/resolver_qps.py            # 3 runs x 10 s per load and server
    .venv/bin/python bench/resolver_qps.py --quick    # 1 run x 3 s
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import random
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TOPOLOGY_FILE = ROOT / "deploy" / "examples" / "topology.yaml"
ZONE = "global.example.com"
SERVER_CPU, LOAD_CPU = 0, 1
TTL = 5
GENERATION = 1
NOW_MS = 1_000_000
START_TIMEOUT_S = 20.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

# -- the scenario: what both servers serve and what they are asked ----------------------

# (cluster, region, first two octets of its endpoints); regions as in the topology file.
CLUSTERS = (
    ("us-east-prod", "us-east-1", "10.1"),
    ("eu-west-prod", "eu-west-1", "10.2"),
    ("ap-south-prod", "ap-south-1", "10.3"),
)
# (namespace, service): every cluster runs each, with 3 endpoints, so an answer is 3 A.
SERVICES = (
    ("production", "api"),
    ("production", "web"),
    ("production", "data-processing"),
    ("production", "auth"),
    ("staging", "api"),
)
ENDPOINTS_PER_CLUSTER = 3
# Client subnets: the topology's networks (source address, or the ECS subnet, -> region).
SUBNETS = (
    ("127.0.1.1", "127.0.1.0", "us-east-1"),
    ("127.0.2.1", "127.0.2.0", "eu-west-1"),
    ("127.0.3.1", "127.0.3.0", "ap-south-1"),
)
# The query mix, 40 queries, shuffled once: 70% the three main services' A records, 10%
# the other services, 10% the same names in mixed case (0x20), 10% NXDOMAIN.
MIX = (
    *[f"api.production.{ZONE}"] * 12,
    *[f"web.production.{ZONE}"] * 8,
    *[f"data-processing.production.{ZONE}"] * 8,
    *[f"auth.production.{ZONE}"] * 2,
    *[f"api.staging.{ZONE}"] * 2,
    f"API.Production.{ZONE}",
    "Web.PRODUCTION.Global.Example.Com",
    f"Data-Processing.production.{ZONE.upper()}",
    f"aPi.pRoDuCtIoN.{ZONE}",
    f"nope.{ZONE}",
    f"apl.production.{ZONE}",
    f"www.{ZONE}",
    f"missing.staging.{ZONE}",
)
TYPE_A, CLASS_IN = 1, 1


def query_names() -> list[str]:
    names = list(MIX)
    random.Random(7).shuffle(names)
    return names


def endpoint(prefix: str, service_index: int, i: int) -> str:
    return f"{prefix}.{service_index}.{i}"


def knot_zone() -> str:
    """The same zone as a file: services as a client of the default region gets them."""
    prefix = CLUSTERS[0][2]  # us-east-1, the topology's default region
    lines = [
        f"$ORIGIN {ZONE}.",
        f"@ {TTL} IN SOA ns1.{ZONE}. hostmaster.{ZONE}. {GENERATION} 60 30 86400 {TTL}",
        f"@ {TTL} IN NS ns1.{ZONE}.",
        f"ns1 {TTL} IN A 127.0.0.1",
    ]
    for index, (namespace, name) in enumerate(SERVICES):
        for i in range(1, ENDPOINTS_PER_CLUSTER + 1):
            lines.append(f"{name}.{namespace} {TTL} IN A {endpoint(prefix, index, i)}")
    return "\n".join(lines) + "\n"


def encode_name(name: str) -> bytes:
    return b"".join(bytes((len(p),)) + p.encode() for p in name.strip(".").split(".")) + b"\0"


def ecs_opt(subnet: str, prefix_len: int = 24) -> bytes:
    """An OPT record carrying an EDNS Client Subnet option (RFC 7871) for ``subnet``."""
    address = socket.inet_aton(subnet)[: (prefix_len + 7) // 8]
    option = struct.pack("!HHHBB", 8, 4 + len(address), 1, prefix_len, 0) + address
    return b"\0" + struct.pack("!HHIH", 41, 1232, 0, len(option)) + option


def query_wire(name: str, opt: bytes = b"") -> bytes:
    """A query without its ID (the generator puts one in front): RD clear, as dnsperf -e 0."""
    head = struct.pack("!HHHHH", 0, 1, 0, 0, 1 if opt else 0)
    return head + encode_name(name) + struct.pack("!HH", TYPE_A, CLASS_IN) + opt


# -- the globaldns server (runs in the child: `resolver_qps.py _serve-globaldns`) ---------


def serve_globaldns(loop_name: str, profile: str | None) -> None:
    """The real UdpServer and Responder on a free port; stops on SIGTERM or stdin EOF."""
    import asyncio

    sys.path.insert(0, str(ROOT))
    from registry import topology as topology_mod
    from registry.model import ClusterState, Endpoint, Service
    from resolver import sockets
    from resolver.main import build_responder
    from resolver.server import UdpServer
    from resolver.settings import ResolverSettings
    from resolver.state import build

    settings = ResolverSettings(topology=TOPOLOGY_FILE, zone=ZONE, ttl=TTL, rrl_rate=0)
    responder = build_responder(settings, topology_mod.load(settings.topology))
    clusters = [
        ClusterState(
            name=cluster,
            region=region,
            last_seen_ms=NOW_MS,
            services=tuple(
                Service(
                    namespace=namespace,
                    name=name,
                    endpoints=tuple(
                        Endpoint(address=endpoint(prefix, index, i))
                        for i in range(1, ENDPOINTS_PER_CLUSTER + 1)
                    ),
                )
                for index, (namespace, name) in enumerate(SERVICES)
            ),
        )
        for cluster, region, prefix in CLUSTERS
    ]
    responder.swap(build(clusters, generation=GENERATION, sync_ms=NOW_MS, lease_ttl_ms=6000))
    sock = sockets.udp("127.0.0.1", 0)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def stdin_readable() -> None:  # the parent went away (or closed the pipe): stop
            if not os.read(sys.stdin.fileno(), 4096):
                loop.remove_reader(sys.stdin.fileno())
                stop.set()

        loop.add_reader(sys.stdin.fileno(), stdin_readable)
        udp = UdpServer(sock, responder)
        ready = {"port": sock.getsockname()[1], "loop": loop_name, "pid": os.getpid()}
        print(json.dumps(ready), flush=True)
        await stop.wait()
        udp.close()

    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if loop_name == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile(time.thread_time)  # CPU time: idle waits do not count
        profiler.enable()
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile or "")
    final = {"stats": dict(responder.stats), "last_error": responder.last_error}
    print(json.dumps(final), flush=True)


# -- processes: pinning, CPU accounting, start and stop -----------------------------------


def pinning_possible() -> bool:
    try:
        return {SERVER_CPU, LOAD_CPU} <= os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return False


def child_setup(cpu: int | None) -> Callable[[], None]:
    """Runs in the child before exec: pin to ``cpu``, die with the parent (PR_SET_PDEATHSIG)."""

    def setup() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)

    return setup


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # fields from the 3rd on (state, ppid...)


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                kids += [
                    int(k) for k in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
                ]
    return kids


def tree_cpu_s(pid: int) -> float:
    """User + system seconds of ``pid`` (all threads), its reaped children and live descendants."""
    total, todo, seen = 0, [pid], set[int]()
    while todo and len(seen) < 1000:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            f = _stat_fields(p)
        except OSError:
            continue
        total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])  # utime stime cutime cstime
        todo += _children(p)
    return total / CLK_TCK


def cpu_jiffies(cpu: int) -> tuple[int, int]:
    """(busy, total) jiffies of one CPU from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            v = [int(x) for x in line.split()[1:]]
            idle = v[3] + (v[4] if len(v) > 4 else 0)
            return sum(v[:8]) - idle, sum(v[:8])
    return 0, 0


def free_port() -> int:
    """A loopback port free for UDP and TCP (Knot listens on both)."""
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
    raise OSError("no loopback port free for both UDP and TCP")


def stop_process(process: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


class StartError(Exception):
    pass


@dataclass
class Server:
    name: str
    label: str
    port: int
    pid: int
    process: subprocess.Popen[Any]
    log: Path
    info: dict[str, Any] = field(default_factory=dict)


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GLOBALDNS_")}


@contextlib.contextmanager
def globaldns_server(
    workdir: Path, cpu: int | None, loop_name: str, profile: Path | None
) -> Iterator[Server]:
    log = workdir / "globaldns.log"
    command = [sys.executable, str(Path(__file__).resolve()), "_serve-globaldns", loop_name]
    if profile is not None:
        command.append(str(profile))
    server = None
    with log.open("wb") as err:
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=ROOT,
            env=clean_env(),
            preexec_fn=child_setup(cpu),
            start_new_session=True,  # Ctrl-C reaches us only; we stop it
        )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT_S)
        line = process.stdout.readline() if ready else b""
        if not line:
            stop_process(process)
            raise StartError(f"globaldns did not start:\n{log.read_text(errors='replace')}")
        info = json.loads(line)
        label = f"globaldns ({info['loop']})"
        server = Server("globaldns", label, info["port"], process.pid, process, log, info)
        yield server
    finally:
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        stop_process(process)
        if process.stdout is not None:
            with contextlib.suppress(OSError, ValueError):
                tail = process.stdout.read().decode(errors="replace").strip().splitlines()
                if tail and server is not None:
                    server.info["final"] = json.loads(tail[-1])
            process.stdout.close()


def knot_conf(directory: Path, port: int, zone_file: Path) -> Path:
    """Everything under ``directory``; one UDP worker; no module loaded, so no RRL."""
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
def knot_server(workdir: Path, cpu: int | None, knotd: str) -> Iterator[Server]:
    directory = workdir / "knot"
    directory.mkdir()
    zone_file = directory / "zone.db"
    zone_file.write_text(knot_zone())
    port = free_port()
    conf = knot_conf(directory, port, zone_file)
    log = directory / "knotd.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [knotd, "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=directory,
            preexec_fn=child_setup(cpu),
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        probe = query_wire(f"api.production.{ZONE}")
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise StartError(f"knotd did not start:\n{log.read_text(errors='replace')}")
            reply = ask(port, probe, timeout=0.2)
            if reply is not None and reply[3] & 0xF == 0 and reply[7] == 3:
                break
            time.sleep(0.05)
        version = version_of([knotd, "-V"], r"version (\S+)")
        yield Server("knot", f"knot {version}", port, process.pid, process, log)
    finally:
        stop_process(process)


def ask(
    port: int, query: bytes, *, source: str = "127.0.0.1", timeout: float = 1.0
) -> bytes | None:
    """One query over UDP; the reply, or None."""
    ident = random.randrange(1 << 16).to_bytes(2, "big")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(timeout)
        try:
            sock.sendto(ident + query, ("127.0.0.1", port))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                data = sock.recv(4096)
                if data[:2] == ident:
                    return data
        except OSError:
            return None
    return None


def version_of(command: list[str], pattern: str) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    match = re.search(pattern, out.stdout + out.stderr)
    return match.group(1) if match else "?"


# -- load generators ---------------------------------------------------------------------


@dataclass
class Load:
    """What one load run saw from the client side."""

    qps: float
    sent: int
    completed: int
    lost: int
    seconds: float
    avg_latency_ms: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    rcodes: dict[str, int] = field(default_factory=dict)
    response_bytes: float | None = None


@dataclass(frozen=True)
class LoadSpec:
    port: int
    seconds: float
    clients: int
    outstanding: int
    rate: float | None  # None: closed loop, as fast as answers come back
    subnets: tuple[int, ...]
    """Which of SUBNETS the queries come from, at once; none: all from 127.0.0.1."""
    ecs: bool


def sources(spec: LoadSpec) -> list[tuple[str, str | None]]:
    """(source address, ECS subnet or None) per client subnet of the load."""
    chosen = [SUBNETS[i] for i in spec.subnets]
    if not chosen:
        return [("127.0.0.1", None)]
    if spec.ecs:
        return [("127.0.0.1", subnet) for _, subnet, _ in chosen]
    return [(source, None) for source, _, _ in chosen]


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class Dnsperf:
    def __init__(self, binary: str, cpu: int | None, workdir: Path) -> None:
        self.binary = binary
        self.cpu = cpu
        self.workdir = workdir
        self.version = version_of([binary, "-h"], r"Version (\S+)")
        self.name = f"dnsperf {self.version}"
        self.datafile = workdir / "queries.txt"
        self.datafile.write_text("".join(f"{name} A\n" for name in query_names()))

    def run(self, spec: LoadSpec) -> Load:
        """One dnsperf per client subnet, at once, all on the load CPU; their sum."""
        targets = sources(spec)
        clients = split(max(spec.clients, len(targets)), len(targets))
        outstanding = split(max(spec.outstanding, len(targets)), len(targets))
        processes = []
        try:
            for k, (source, subnet) in enumerate(targets):
                command = [self.binary, "-s", "127.0.0.1", "-p", str(spec.port), "-a", source]
                command += ["-d", str(self.datafile), "-c", str(clients[k])]
                command += ["-q", str(outstanding[k]), "-l", f"{spec.seconds:g}", "-t", "2"]
                if subnet is not None:
                    command += ["-E", "8:" + ecs_opt(subnet)[15:].hex()]
                if spec.rate:
                    command += ["-Q", str(max(1, round(spec.rate / len(targets)))), "-v"]
                out = (self.workdir / f"dnsperf.{k}.out").open("w+b")
                try:
                    process = subprocess.Popen(
                        command,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        preexec_fn=child_setup(self.cpu),
                        start_new_session=True,
                    )
                except OSError:
                    out.close()
                    raise
                processes.append((process, out))
            for process, _ in processes:
                process.wait(timeout=spec.seconds + 30)
            return self._combine([self._parse(out) for _, out in processes])
        finally:
            for process, out in processes:
                stop_process(process)
                out.close()

    @staticmethod
    def _parse(out: Any) -> dict[str, Any]:
        out.seek(0)
        text = out.read().decode(errors="replace")

        def number(label: str) -> float:
            match = re.search(rf"{label}:\s+([\d.]+)", text)
            if match is None:
                raise RuntimeError(f"dnsperf printed no {label!r}:\n{text[-2000:]}")
            return float(match.group(1))

        codes = re.search(r"Response codes:\s+(.*)", text)
        rcodes = {}
        if codes:
            for name, count in re.findall(r"([A-Z]+) (\d+)", codes.group(1)):
                rcodes[name] = int(count)
        size = re.search(r"Average packet size:\s+request \d+, response (\d+)", text)
        latencies = [float(x) for x in re.findall(r"^> \S+ .* ([\d.]+)$", text, re.M)]
        return {
            "qps": number("Queries per second"),
            "sent": int(number("Queries sent")),
            "completed": int(number("Queries completed")),
            "lost": int(number("Queries lost")),
            "seconds": number(r"Run time \(s\)"),
            "avg": number(r"Average Latency \(s\)"),
            "rcodes": rcodes,
            "size": float(size.group(1)) if size else None,
            "latencies": latencies,
        }

    @staticmethod
    def _combine(parts: list[dict[str, Any]]) -> Load:
        completed = sum(p["completed"] for p in parts)
        rcodes: Counter[str] = Counter()
        for p in parts:
            rcodes.update(p["rcodes"])
        latencies = sorted(x * 1000 for p in parts for x in p["latencies"])
        sizes = [p["size"] * p["completed"] for p in parts if p["size"] is not None]
        return Load(
            qps=sum(p["qps"] for p in parts),
            sent=sum(p["sent"] for p in parts),
            completed=completed,
            lost=sum(p["lost"] for p in parts),
            seconds=max(p["seconds"] for p in parts),
            avg_latency_ms=sum(p["avg"] * p["completed"] for p in parts) / max(completed, 1) * 1e3,
            p50_ms=percentile(latencies, 0.50),
            p99_ms=percentile(latencies, 0.99),
            rcodes=dict(rcodes),
            response_bytes=sum(sizes) / max(completed, 1) if sizes else None,
        )


class PythonLoad:
    """This file's own generator (`resolver_qps.py _loadgen SPEC`), in a process on CPU 1."""

    name = "python load generator (this script)"

    def __init__(self, cpu: int | None) -> None:
        self.cpu = cpu

    def run(self, spec: LoadSpec) -> Load:
        command = [sys.executable, str(Path(__file__).resolve()), "_loadgen"]
        command.append(json.dumps(asdict(spec)))
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=child_setup(self.cpu),
            start_new_session=True,
        )
        try:
            out, err = process.communicate(timeout=spec.seconds + 30)
        finally:
            stop_process(process)
        if process.returncode != 0:
            raise RuntimeError(f"load generator failed:\n{err.decode(errors='replace')}")
        return Load(**json.loads(out))


MAX_QPS = 2_000_000  # a bound on the generator's loop: never more queries than this a second
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


@dataclass
class Flow:
    """One client subnet's socket in the Python generator, and its queries in flight."""

    sock: socket.socket
    window: int
    wires: list[bytes]
    inflight: dict[int, float] = field(default_factory=dict)
    next_id: int = 0


def generate(spec: LoadSpec) -> Load:
    """Closed loop (``outstanding`` in flight) or paced at ``rate``; bounded in time and count.

    One connected socket per client subnet; each keeps its share of the queries in flight,
    matches answers by ID, and gives up on a query after 1 s (lost).
    """
    timeout = 1.0
    queries = query_names()
    targets = sources(spec)
    windows = split(max(spec.outstanding, len(targets)), len(targets))
    flows = []
    for (source, subnet), window in zip(targets, windows, strict=True):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", spec.port))
        sock.setblocking(False)
        opt = ecs_opt(subnet) if subnet else b""
        flows.append(Flow(sock, window, [query_wire(name, opt) for name in queries]))
    by_fd = {flow.sock.fileno(): flow for flow in flows}
    rcodes: Counter[int] = Counter()
    latencies: list[float] = []
    sent = completed = lost = size_total = 0
    max_queries = int(MAX_QPS * spec.seconds)
    clock = time.perf_counter
    start = clock()
    deadline = start + spec.seconds
    last_sweep = now = start

    def receive(flow: Flow, now: float) -> int:
        nonlocal completed, size_total
        got = 0
        for _ in range(256):
            try:
                data = flow.sock.recv(4096)
            except OSError:  # would block; or ICMP port unreachable and the like
                break
            sent_at = flow.inflight.pop((data[0] << 8) | data[1], None) if len(data) >= 12 else None
            if sent_at is None:
                continue  # late (already counted lost) or not ours
            got += 1
            completed += 1
            size_total += len(data)
            rcodes[data[3] & 0xF] += 1
            latencies.append(now - sent_at)
        return got

    def send(flow: Flow, room: int) -> int:
        nonlocal sent
        inflight, done = flow.inflight, 0
        for _ in range(max(0, room)):
            ident = flow.next_id
            for _ in range(8):  # skip IDs still in flight
                if ident not in inflight:
                    break
                ident = (ident + 1) & 0xFFFF
            flow.next_id = (ident + 1) & 0xFFFF
            try:
                flow.sock.send(ident.to_bytes(2, "big") + flow.wires[sent % len(flow.wires)])
            except OSError:
                break
            inflight[ident] = clock()
            sent += 1
            done += 1
        return done

    while now < deadline and sent < max_queries:
        progress = 0
        for flow in flows:
            progress += receive(flow, now)
            room = flow.window - len(flow.inflight)
            if spec.rate:
                room = min(room, int((now - start) * spec.rate) - sent)
            progress += send(flow, room)
        now = clock()
        if now - last_sweep > 0.1:
            last_sweep = now
            for flow in flows:
                stale = [i for i, t in flow.inflight.items() if now - t > timeout]
                for i in stale:
                    del flow.inflight[i]
                lost += len(stale)
        if not progress:
            wait = 0.005
            if spec.rate:
                wait = min(wait, max(0.0, start + (sent + 1) / spec.rate - now))
            readable, _, _ = select.select(list(by_fd), [], [], wait)
            now = clock()
            for fd in readable:
                receive(by_fd[fd], now)
            now = clock()
    elapsed = max(now - start, 1e-9)
    # Give the answers still in flight a moment; whatever does not come is lost.
    end = clock() + 0.2
    while any(flow.inflight for flow in flows) and clock() < end:
        readable, _, _ = select.select(list(by_fd), [], [], 0.01)
        for fd in readable:
            receive(by_fd[fd], clock())
    lost += sum(len(flow.inflight) for flow in flows)
    for flow in flows:
        flow.sock.close()
    latencies.sort()
    return Load(
        qps=completed / elapsed,
        sent=sent,
        completed=completed,
        lost=lost,
        seconds=elapsed,
        avg_latency_ms=statistics.fmean(latencies) * 1e3 if latencies else None,
        p50_ms=(percentile(latencies, 0.5) or 0) * 1e3 if latencies else None,
        p99_ms=(percentile(latencies, 0.99) or 0) * 1e3 if latencies else None,
        rcodes={RCODES.get(k, str(k)): v for k, v in rcodes.items()},
        response_bytes=size_total / completed if completed else None,
    )


# -- measuring ---------------------------------------------------------------------------


@dataclass
class Measurement:
    server: str
    mode: str  # "closed" (as fast as it answers) or "rate" (paced)
    run: int
    rate: float | None
    load: Load
    server_cpu_s: float
    cpu_us_per_query: float | None
    server_cpu_share: float
    """The server's CPU seconds per wall second (1.0: it had its core to itself, all of it)."""
    core_busy: float
    """How busy the server's core was, whoever used it (the server, the kernel, others)."""
    generator_cpu_share: float
    """The load generator's CPU seconds per wall second (near 1.0: it was the limit)."""
    load_core_busy: float
    """How busy the load generator's core was, whoever used it."""
    clients: list[str] = field(default_factory=list)
    """Where the queries came from: source addresses, or ECS subnets."""

    @property
    def others_on_core(self) -> float:
        """Roughly what other processes took of the server's core during the run."""
        return max(0.0, self.core_busy - self.server_cpu_share)

    @property
    def others_on_load_core(self) -> float:
        return max(0.0, self.load_core_busy - self.generator_cpu_share)


Generator = Dnsperf | PythonLoad


def measure(server: Server, generator: Generator, spec: LoadSpec, run: int) -> Measurement:
    cpu_before, (busy0, total0) = tree_cpu_s(server.pid), cpu_jiffies(SERVER_CPU)
    load_busy0, load_total0 = cpu_jiffies(LOAD_CPU)
    children_before = reaped_cpu_s()
    wall = time.monotonic()
    load = generator.run(spec)
    wall = time.monotonic() - wall
    cpu_after, (busy1, total1) = tree_cpu_s(server.pid), cpu_jiffies(SERVER_CPU)
    load_busy1, load_total1 = cpu_jiffies(LOAD_CPU)
    used = cpu_after - cpu_before
    generator_used = reaped_cpu_s() - children_before  # the generators are reaped by now
    return Measurement(
        server=server.name,
        mode="rate" if spec.rate else "closed",
        run=run,
        rate=spec.rate,
        load=load,
        server_cpu_s=used,
        cpu_us_per_query=used / load.completed * 1e6 if load.completed else None,
        server_cpu_share=used / wall,
        core_busy=(busy1 - busy0) / max(total1 - total0, 1),
        generator_cpu_share=generator_used / load.seconds if load.seconds else 0.0,
        load_core_busy=(load_busy1 - load_busy0) / max(load_total1 - load_total0, 1),
    )


def reaped_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def sanity(servers: list[Server], spec: LoadSpec) -> dict[str, dict[str, Any]]:
    """Every distinct query once per server: rcode, answer count and size."""
    seen: dict[str, dict[str, Any]] = {}
    source, subnet = sources(spec)[0]
    opt = ecs_opt(subnet) if subnet else b""
    for name in sorted(set(MIX), key=str.lower):
        row = seen.setdefault(name, {})
        for server in servers:
            reply = ask(server.port, query_wire(name, opt), source=source)
            row[server.name] = reply and {
                "rcode": reply[3] & 0xF,
                "answers": reply[7],
                "bytes": len(reply),
            }
    return seen


def differences(checked: dict[str, dict[str, Any]], ecs: bool) -> list[str]:
    """Where the two servers do not give the same answer (rcode, count, size)."""
    notes = []
    sizes: dict[int, list[str]] = {}
    for name, row in checked.items():
        ours, theirs = row.get("globaldns"), row.get("knot")
        if not ours or not theirs:
            notes.append(f"no answer to {name} from {'globaldns' if not ours else 'knot'}")
        elif (ours["rcode"], ours["answers"]) != (theirs["rcode"], theirs["answers"]):
            notes.append(f"{name}: globaldns {ours}, knot {theirs}: not the same answer")
        elif ours["bytes"] != theirs["bytes"]:
            sizes.setdefault(ours["bytes"] - theirs["bytes"], []).append(name)
    for delta, names in sizes.items():
        why = " (ECS echoed; knot without its geoip module ignores ECS)" if ecs else ""
        notes.append(
            f"globaldns's answers are {delta:+d} bytes against knot's for {len(names)} of "
            f"{len(checked)} names{why}"
        )
    return notes


def run_all(
    servers: list[Server], generator: Generator, spec: LoadSpec, args: argparse.Namespace
) -> list[Measurement]:
    """Per run: each server at full speed, then each at a moderate fixed rate (interleaved,
    so that a change in the machine's background load hits both servers alike)."""
    measurements: list[Measurement] = []

    every = spec.subnets
    concurrent = args.concurrent_subnets or not isinstance(generator, Dnsperf)

    def one(server: Server, run: int, rate: float | None) -> Measurement:
        # One dnsperf per subnet would cost dnsperf a third of its speed on its one core: by
        # default each run comes from one subnet (the same for both servers), in turn.
        subnets = every if concurrent or not every else (every[run % len(every)],)
        load = replace(spec, port=server.port, rate=rate, subnets=subnets)
        m = measure(server, generator, load, run)
        m.clients = [f"{source} (ECS {ecs}/24)" if ecs else source for source, ecs in sources(load)]
        if server.process.poll() is not None:
            raise StartError(f"{server.name} exited during the run:\n{server.log.read_text()}")
        measurements.append(m)
        print(
            f"  run {run + 1} {server.name:9} "
            + (f"at {rate:,.0f} qps" if rate else "max speed").ljust(17)
            + f"{m.load.qps:>10,.0f} qps {fmt(m.cpu_us_per_query, '.2f'):>7} CPU-us/q "
            f"p50 {fmt(m.load.p50_ms, '.3f')} ms p99 {fmt(m.load.p99_ms, '.3f')} ms "
            f"lost {m.load.lost}; CPU: server {m.server_cpu_share:.0%}, "
            f"load generator {m.generator_cpu_share:.0%}, others "
            f"{m.others_on_core:.0%}/{m.others_on_load_core:.0%}; from {', '.join(m.clients)}",
            flush=True,
        )
        return m

    for run in range(args.runs):
        fastest = [one(server, run, None).load.qps for server in servers]
        rate = args.rate
        if rate is None:  # auto: moderate for both, even on a slow or busy machine
            rate = min(DEFAULT_RATE, round(min(fastest) * AUTO_RATE_SHARE, -2))
        if rate:
            for server in servers:
                one(server, run, rate)
    return measurements


DEFAULT_RATE = 20_000
AUTO_RATE_SHARE = 0.3


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(measurements: list[Measurement], server: str, mode: str) -> dict[str, Any] | None:
    rows = [m for m in measurements if m.server == server and m.mode == mode]
    if not rows:
        return None
    return {
        "qps": median([m.load.qps for m in rows]),
        "rate": median([m.rate for m in rows]),
        "cpu_us_per_query": median([m.cpu_us_per_query for m in rows]),
        "server_cpu_share": median([m.server_cpu_share for m in rows]),
        "core_busy": median([m.core_busy for m in rows]),
        "others_on_core": median([m.others_on_core for m in rows]),
        "generator_cpu_share": median([m.generator_cpu_share for m in rows]),
        "others_on_load_core": median([m.others_on_load_core for m in rows]),
        "lost_fraction": median([m.load.lost / max(m.load.sent, 1) for m in rows]),
        "avg_latency_ms": median([m.load.avg_latency_ms for m in rows]),
        "p50_ms": median([m.load.p50_ms for m in rows]),
        "p99_ms": median([m.load.p99_ms for m in rows]),
        "response_bytes": median([m.load.response_bytes for m in rows]),
        "runs": len(rows),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, spec) + suffix


def machine() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_before": os.getloadavg(),
    }


def ratios(g: dict[str, Any], k: dict[str, Any]) -> dict[str, float | None]:
    gc, kc, gr, kr = g["closed"], k["closed"], g["rate"] or {}, k["rate"] or {}
    return {
        "qps": ratio(gc["qps"], kc["qps"]),
        "cpu_us_per_query": ratio(gc["cpu_us_per_query"], kc["cpu_us_per_query"]),
        "p50_at_rate": ratio(gr.get("p50_ms"), kr.get("p50_ms")),
        "p99_at_rate": ratio(gr.get("p99_ms"), kr.get("p99_ms")),
        "cpu_us_per_query_at_rate": ratio(gr.get("cpu_us_per_query"), kr.get("cpu_us_per_query")),
    }


def warnings(summary: dict[str, Any]) -> list[str]:
    """What limited each server at max speed, when it was not its own core."""
    out = []
    for name, s in summary.items():
        closed = s["closed"]
        if closed["server_cpu_share"] >= 0.85:
            continue
        used = f"{name} used {closed['server_cpu_share']:.0%} of CPU {SERVER_CPU} at max speed: "
        flatters = (
            " Its max qps is not its own limit, so the qps ratio flatters globaldns: read "
            "CPU-us per query."
        )
        if closed["generator_cpu_share"] >= 0.85:
            why = "the load generator was the limit"
        else:
            why = (
                f"other processes took ~{closed['others_on_core']:.0%} of CPU {SERVER_CPU} and "
                f"~{closed['others_on_load_core']:.0%} of CPU {LOAD_CPU} (the load generator's): "
                "the machine is busy, absolute numbers are low and noisy, the ratios hold up "
                "better"
            )
        out.append(used + why + "." + (flatters if name == "knot" else ""))
    return out


def report(result: dict[str, Any]) -> str:
    c, m = result["config"], result["machine"]
    rate = result["servers"]["globaldns"]["rate"]
    lines = [
        f"globaldns resolver benchmark, {result['date']}, {m['cpus']} CPUs ({m['cpu_model']}), "
        "load average before " + " ".join(f"{x:.2f}" for x in m["loadavg_before"]),
        f"load generator: {result['load_generator']}"
        + (f" on CPU {LOAD_CPU}, servers on CPU {SERVER_CPU}" if c["pinned"] else " (NOT pinned)"),
        f"{c['runs']} run(s) x {c['seconds']:g} s per server and load, medians; max speed: "
        f"{c['clients']} clients, {c['outstanding']} outstanding; fixed rate: "
        + (f"{rate['rate']:,.0f} qps" if rate else "off")
        + f"; {c['subnets']} client subnet(s) by "
        + ("ECS" if c["ecs"] else "source address")
        + (", at once" if c["concurrent_subnets"] else ", one per run in turn"),
        "",
        f"{'':24}{'max qps':>10}{'CPU-us/q':>10}{'server':>8}{'load gen':>9}{'others':>9}"
        f"{'lost':>7}{'p50 ms':>9}{'p99 ms':>9}{'CPU-us/q':>10}",
        f"{'':24}{'':>10}{'':>10}{'CPU':>8}{'CPU':>9}{'CPU0/1':>9}{'':>7}"
        f"{'at rate':>9}{'at rate':>9}{'at rate':>10}",
    ]
    for s in result["servers"].values():
        closed, paced = s["closed"], s["rate"] or {}
        others = f"{closed['others_on_core']:.0%}/{closed['others_on_load_core']:.0%}"
        lines.append(
            f"{s['label']:24}{fmt(closed['qps'], ',.0f'):>10}"
            f"{fmt(closed['cpu_us_per_query'], '.2f'):>10}"
            f"{fmt(closed['server_cpu_share'], '.0%'):>8}"
            f"{fmt(closed['generator_cpu_share'], '.0%'):>9}"
            f"{others:>9}"
            f"{fmt(closed['lost_fraction'], '.1%'):>7}"
            f"{fmt(paced.get('p50_ms'), '.3f'):>9}{fmt(paced.get('p99_ms'), '.3f'):>9}"
            f"{fmt(paced.get('cpu_us_per_query'), '.2f'):>10}"
        )
    r = result["ratios"]
    lines.append(
        f"{'globaldns / knot':24}{fmt(r['qps'], '.2f', 'x'):>10}"
        f"{fmt(r['cpu_us_per_query'], '.2f', 'x'):>10}{'':>33}"
        f"{fmt(r['p50_at_rate'], '.2f', 'x'):>9}{fmt(r['p99_at_rate'], '.2f', 'x'):>9}"
        f"{fmt(r['cpu_us_per_query_at_rate'], '.2f', 'x'):>10}"
    )
    sizes = [
        f"{s['label']} {fmt(s['closed']['response_bytes'], '.1f')}"
        for s in result["servers"].values()
    ]
    lines += ["", "mean answer size (bytes): " + ", ".join(sizes)]
    lines += result["notes"]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 run, 3 s per load")
    parser.add_argument("--runs", type=int, default=3, help="runs per server (median taken)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each load")
    parser.add_argument("--clients", type=int, default=10, help="dnsperf -c (max speed)")
    parser.add_argument("--outstanding", type=int, default=100, help="dnsperf -q (max speed)")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help=f"qps of the latency load (dnsperf -Q); 0: none; default: {DEFAULT_RATE:,}, or "
        f"{AUTO_RATE_SHARE * 100:.0f}%% of the slower server's max qps in that run if lower",
    )
    parser.add_argument(
        "--subnets",
        type=int,
        default=len(SUBNETS),
        choices=range(len(SUBNETS) + 1),
        help="client subnets the load comes from; 0: all from 127.0.0.1",
    )
    parser.add_argument(
        "--concurrent-subnets",
        action="store_true",
        help="with dnsperf, one process per subnet at once (slower dnsperf), "
        "not one subnet per run in turn",
    )
    parser.add_argument(
        "--ecs", action="store_true", help="send the subnets as EDNS Client Subnet, not as sources"
    )
    parser.add_argument("--load", choices=("auto", "dnsperf", "python"), default="auto")
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto")
    parser.add_argument("--knotd", default=shutil.which("knotd") or "/usr/sbin/knotd")
    parser.add_argument(
        "--profile",
        type=Path,
        help="run globaldns under cProfile, write its stats here (slower: numbers are off)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON result")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.seconds = 1, 3.0
    args.runs = max(1, min(args.runs, 20))
    args.seconds = max(1.0, min(args.seconds, 300.0))
    if args.profile is not None:
        args.profile = args.profile.resolve()
    return args


def event_loop(choice: str) -> str:
    if choice != "auto":
        return choice
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    before = machine()
    pinned = pinning_possible()
    server_cpu, load_cpu = (SERVER_CPU, LOAD_CPU) if pinned else (None, None)
    notes: list[str] = []
    if pinned:
        os.sched_setaffinity(0, {LOAD_CPU})  # this script stays off the servers' core
    else:
        notes.append("fewer than 2 CPUs usable: nothing pinned, numbers are rough")
    loop_name = event_loop(args.loop)
    if not Path(args.knotd).exists():
        print(f"knotd not found at {args.knotd} (Debian: apt-get install knot)", file=sys.stderr)
        return 1
    dnsperf = shutil.which("dnsperf")
    if args.load == "dnsperf" and not dnsperf:
        print("dnsperf not found (Debian: apt-get install dnsperf)", file=sys.stderr)
        return 1
    spec = LoadSpec(
        port=0,
        seconds=args.seconds,
        clients=args.clients,
        outstanding=args.outstanding,
        rate=None,
        subnets=tuple(range(args.subnets)),
        ecs=args.ecs,
    )
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="resolver-qps-")))
        generator: Generator
        if args.load != "python" and dnsperf:
            generator = Dnsperf(dnsperf, load_cpu, workdir)
        else:
            generator = PythonLoad(load_cpu)
        try:
            servers = [
                stack.enter_context(globaldns_server(workdir, server_cpu, loop_name, args.profile)),
                stack.enter_context(knot_server(workdir, server_cpu, args.knotd)),
            ]
            checked = sanity(servers, spec)
            notes += differences(checked, args.ecs)
            print(
                f"load generator: {generator.name}; servers: {', '.join(s.label for s in servers)}"
            )
            print(f"{args.runs} run(s) x {args.seconds:g} s per load and server ...", flush=True)
            measurements = run_all(servers, generator, spec, args)
        except StartError as exc:
            print(exc, file=sys.stderr)
            return 1
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
            print(f"the load generator failed: {exc}", file=sys.stderr)
            return 1
    # Every process is stopped here; globaldns has reported its counters on the way out.
    final = servers[0].info.get("final") or {}
    if final.get("stats", {}).get("internal_error"):
        notes.append(f"globaldns answered SERVFAIL on internal errors:\n{final.get('last_error')}")
    summary = {
        s.name: {
            "label": s.label,
            "closed": summarize(measurements, s.name, "closed"),
            "rate": summarize(measurements, s.name, "rate"),
        }
        for s in servers
    }
    notes = warnings(summary) + notes
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {**before, "loadavg_after": os.getloadavg()},
        "load_generator": generator.name,
        "config": {
            "runs": args.runs,
            "seconds": args.seconds,
            "clients": args.clients,
            "outstanding": args.outstanding,
            "rate": args.rate,
            "subnets": args.subnets,
            "concurrent_subnets": args.concurrent_subnets or not isinstance(generator, Dnsperf),
            "ecs": args.ecs,
            "loop": loop_name,
            "pinned": pinned,
            "query_mix": query_names(),
            "knot_zone": knot_zone(),
        },
        "servers": summary,
        "ratios": ratios(summary["globaldns"], summary["knot"]),
        "sanity": checked,
        "globaldns_final": final,
        "notes": notes,
        "measurements": [asdict(m) for m in measurements],
    }
    print()
    print(report(result))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"resolver_qps-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    if args.profile:
        import pstats

        print(f"\ncProfile of globaldns under the loads above (it slowed it): {args.profile}")
        pstats.Stats(str(args.profile)).sort_stats("tottime").print_stats(20)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_serve-globaldns":
        serve_globaldns(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    elif len(sys.argv) > 2 and sys.argv[1] == "_loadgen":
        print(json.dumps(asdict(generate(LoadSpec(**json.loads(sys.argv[2]))))))
    else:
        # Ctrl-C and kill both unwind through every `finally`, which stops what was started
        # (also when started in the background by a shell that ignores SIGINT).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            sys.exit(main(sys.argv[1:]))
        except KeyboardInterrupt:
            print("\ninterrupted: everything it started is stopped", file=sys.stderr)
            sys.exit(130)
