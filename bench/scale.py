"""How globaldns holds up as the registry grows: load, memory, propagation, latency, rate.

For each registry size (3 x 10 x 1 = 30 endpoints, 3 x 10,000 x 10 = 300k and
30 x 10,000 x 10 = 3M), in the same run, on loopback, with the real processes:

1. a fresh ``redis-server`` (Debian's, else the embedded Valkey), the real ``globaldns
   registry`` (``GLOBALDNS_*`` settings, a topology written for the size);
2. the registry built through its API: one whole-state report per cluster, gzip;
   Redis ``INFO memory`` after it;
3. the real ``globaldns resolver`` started: **cold load** (process start → ``/readyz``
   200), its **RSS** and **idle CPU** (``/proc``; agents heartbeating meanwhile);
4. simulated agents (bench/scale_agents.py, in processes of their own) post a
   **background churn** of delta reports on some services while the benchmark flips
   one endpoint's ``conditions.ready`` at a time on others and polls the resolver over
   UDP until the answer shows it: **propagation** = that answer's arrival - the flip's
   POST. Meanwhile another process sends a query every few ms to random services:
   **DNS latency** during the churn. Registry CPU per change, delta body size;
5. every cluster's chain posts deltas back to back: **delta reports/s accepted**.

Every process runs on the same machine (2 cores here): the measuring clients share the
CPUs with the servers, which the output says next to the figures. It is a report: the
exit status is 0 whatever the figures, 1 when something could not be started or run.
See bench/README.md (bench/scale.py) for how to read it.

    .venv/bin/python bench/scale.py              # small, 300k and 3M (make bench-scale)
    .venv/bin/python bench/scale.py --skip-3m    # small and 300k
    .venv/bin/python bench/scale.py --quick      # smaller sizes and shorter phases
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import multiprocessing
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import scale_world as world
from scale_agents import agent_process
from scale_dns import Poller, latency_stream, query_wire
from scale_procs import (
    CLK_TCK,
    Proc,
    Processes,
    StartError,
    cpu_seconds,
    free_port,
    http_get,
    log_tail,
    memory,
    redis_info,
    start_http,
)
from scale_world import Scenario

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
MB = 1024 * 1024

FULL = (
    Scenario("small", 3, 10, 1),
    Scenario("300k", 3, 10_000, 10),
    Scenario("3m", 30, 10_000, 10),
)
QUICK = (
    Scenario("small", 3, 10, 1),
    Scenario("quick-6k", 3, 200, 10),
    Scenario("quick-30k", 30, 100, 10),
)
# quick sizes stand in for these (their size-independent targets are shown)
STANDS_FOR = {"quick-6k": "300k", "quick-30k": "3m"}


@dataclass(frozen=True)
class Target:
    bound: float
    at_most: bool = True

    def met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return value <= self.bound if self.at_most else value >= self.bound

    def text(self, unit: str) -> str:
        return f"{'≤' if self.at_most else '≥'} {self.bound:g}{unit}"


# The targets of GitHub issue #9, "Scale". Keys are the metric keys of `ROWS`.
_FLOW_TARGETS = {
    "prop_p50_ms": Target(20),
    "prop_p99_ms": Target(100),
    "dns_p99_ms": Target(2),
    "dns_max_ms": Target(20),
}
TARGETS: dict[str, dict[str, Target]] = {
    "300k": {
        "cold_load_s": Target(3),
        "rss_mb": Target(200),
        "idle_cpu_pct": Target(1),
        **_FLOW_TARGETS,
        "delta_bytes": Target(2048),
        "reports_per_s": Target(2000, at_most=False),
    },
    "3m": {"cold_load_s": Target(30), "rss_mb": Target(1536), **_FLOW_TARGETS},
}
SIZE_DEPENDENT = {"cold_load_s", "rss_mb"}

# (key, label, unit, format) of the table, in order.
ROWS = (
    ("endpoints", "endpoints (clusters x services x endpoints)", "", ",.0f"),
    ("load_s", "registry whole-state load, all clusters (s)", "s", ".1f"),
    ("whole_state_kb", "whole-state report per cluster, JSON / gzip (KB)", "", ""),
    ("redis_mb", "Redis used_memory after the load (MB)", "MB", ".1f"),
    ("redis_bytes_per_ep", "  per endpoint, above an empty Redis (bytes)", "B", ".0f"),
    ("cold_load_s", "resolver cold load: start -> /readyz 200 (s)", " s", ".2f"),
    ("rss_mb", "resolver RSS after load (MB)", " MB", ".0f"),
    ("rss_bytes_per_ep", "  per endpoint (bytes)", "B", ".0f"),
    ("rss_marginal_per_ep", "  per endpoint, above the small registry's RSS (bytes)", "B", ".0f"),
    ("idle_cpu_pct", "resolver idle CPU (% of a core)", " %", ".2f"),
    ("idle_others_pct", "  other processes' CPU meanwhile (% of a core)", "%", ".0f"),
    ("prop_p50_ms", "propagation p50: POST -> DNS answer (ms)", " ms", ".1f"),
    ("prop_p99_ms", "propagation p99 (ms)", " ms", ".1f"),
    ("prop_max_ms", "propagation max (ms)", "ms", ".1f"),
    ("flips", "flips seen / posted", "", ""),
    ("hist_p50_ms", "resolver globaldns_propagation_seconds p50 (ms)", "ms", ".1f"),
    ("hist_p99_ms", "resolver globaldns_propagation_seconds p99 (ms)", "ms", ".1f"),
    ("ack_p50_ms", "delta POST -> 200 p50 (ms)", "ms", ".1f"),
    ("dns_p50_ms", "DNS latency during churn, random names p50 (ms)", " ms", ".3f"),
    ("dns_p99_ms", "  p99 (ms)", " ms", ".3f"),
    ("dns_max_ms", "  max (ms)", " ms", ".1f"),
    ("dns_lost", "DNS queries lost / sent", "", ""),
    ("hot_p50_ms", "DNS latency of the flip poller (one name, cached) p50 (ms)", "ms", ".3f"),
    ("hot_p99_ms", "  p99 (ms)", "ms", ".3f"),
    ("hot_max_ms", "  max (ms)", "ms", ".1f"),
    ("churn_per_s", "background churn achieved (deltas/s)", "", ".0f"),
    ("delta_bytes", "bytes sent per single-endpoint change (delta body)", " B", ".0f"),
    ("registry_cpu_ms", "registry CPU per change (ms)", "ms", ".2f"),
    ("redis_cpu_ms", "Redis CPU per change (ms)", "ms", ".3f"),
    ("resolver_churn_cpu_pct", "resolver CPU during churn (% of a core)", "%", ".0f"),
    ("churn_others_pct", "  other processes' CPU meanwhile (% of a core)", "%", ".0f"),
    ("reports_per_s", "delta reports/s accepted (all chains, back to back)", "/s", ",.0f"),
    ("tp_post_p50_ms", "  delta POST -> 200 p50 meanwhile (ms)", "ms", ".1f"),
    ("tp_registry_cpu_pct", "  registry CPU meanwhile (% of a core)", "%", ".0f"),
    ("tp_resolver_cpu_pct", "  resolver CPU meanwhile (% of a core)", "%", ".0f"),
    ("tp_redis_cpu_pct", "  Redis CPU meanwhile (% of a core)", "%", ".0f"),
    ("tp_clients_cpu_pct", "  agent processes' CPU meanwhile (% of a core)", "%", ".0f"),
    ("tp_others_pct", "  other processes' CPU meanwhile (% of a core)", "%", ".0f"),
)


class BenchError(Exception):
    """A phase could not run; the scenario stops and says why."""


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


# -- the servers ------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GLOBALDNS_")}


def redis_binary(choice: str | None) -> str:
    if choice:
        return choice
    sys.path.insert(0, str(ROOT))
    from globaldns.redis_server import find_binary

    return find_binary(prefer_system=True)


@dataclass
class Servers:
    redis: Proc
    redis_url: str
    registry: Proc
    registry_url: str
    tokens: dict[str, str]


def start_redis(procs: Processes, binary: str) -> tuple[Proc, str]:
    """A fresh redis-server without persistence, on a free port (again if it was taken)."""
    for attempt in range(3):
        port = free_port()
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(procs.workdir), "--loglevel", "warning"]
        redis = procs.start("redis", command, clean_env())
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while redis.alive() and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if redis_info(url)["tcp_port"] == port:
                    return redis, url
            time.sleep(0.05)
        if redis.alive() or attempt == 2:
            break
        procs.stop(redis)
    raise StartError(f"redis did not start:\n{log_tail(redis.log)}")


def start_backend(procs: Processes, scenario: Scenario, args: argparse.Namespace) -> Servers:
    workdir = procs.workdir
    redis, redis_url = start_redis(procs, redis_binary(args.redis_server))
    (workdir / "topology.yaml").write_text(world.topology_yaml(scenario))
    tokens = {name: f"bench-{name}-{os.urandom(12).hex()}" for name in scenario.cluster_names()}
    env = {
        **clean_env(),
        "GLOBALDNS_REDIS_URL": redis_url,
        "GLOBALDNS_HOST": "127.0.0.1",
        "GLOBALDNS_TOPOLOGY": str(workdir / "topology.yaml"),
        "GLOBALDNS_CLUSTER_TOKENS": json.dumps(tokens),
        "GLOBALDNS_LEASE_TTL_S": str(args.lease_ttl_s),
        "GLOBALDNS_MAX_BODY_BYTES": str(256 * MB),
        "GLOBALDNS_MAX_REPORT_BYTES": str(256 * MB),
        "GLOBALDNS_MAX_SERVICES_PER_CLUSTER": str(max(10_000, scenario.services)),
        "GLOBALDNS_MAX_ENDPOINTS_PER_SERVICE": str(max(1000, scenario.endpoints)),
        "GLOBALDNS_MAX_CLUSTERS": str(max(100, scenario.clusters)),
        # The throughput phase posts deltas back to back per cluster: it measures the
        # registry's capacity, which the per-cluster report rate limit would hide.
        "GLOBALDNS_REPORT_RATE": "0",
        "GLOBALDNS_LOG_JSON": "true",
    }
    ports: list[int] = []

    def env_for() -> tuple[dict[str, str], str]:
        ports[:] = [free_port()]
        return {**env, "GLOBALDNS_PORT": str(ports[0])}, f"http://127.0.0.1:{ports[0]}/readyz"

    command = [str(BIN / "globaldns"), "--log-level", args.log_level, "registry"]
    registry, _ = start_http(procs, "registry", command, env_for, timeout=30)
    return Servers(redis, redis_url, registry, f"http://127.0.0.1:{ports[0]}", tokens)


def start_resolver(
    procs: Processes, redis_url: str, args: argparse.Namespace, timeout: float
) -> tuple[Proc, int, str, float]:
    """The resolver process; returns it, its DNS port, its HTTP URL and the cold load (s)."""
    env = {
        **clean_env(),
        "GLOBALDNS_REDIS_URL": redis_url,
        "GLOBALDNS_DNS_HOST": "127.0.0.1",
        "GLOBALDNS_HTTP_HOST": "127.0.0.1",
        "GLOBALDNS_TOPOLOGY": str(procs.workdir / "topology.yaml"),
        "GLOBALDNS_LEASE_TTL_S": str(args.lease_ttl_s),
        "GLOBALDNS_RRL_RATE": "0",  # the pollers ask one name ~1000 times a second
        "GLOBALDNS_ECS_TRUSTED": json.dumps(["127.0.0.0/8"]),
        "GLOBALDNS_LOG_JSON": "true",
    }
    ports: list[int] = []

    def env_for() -> tuple[dict[str, str], str]:
        ports[:] = [free_port(), free_port()]
        dns_http = {"GLOBALDNS_DNS_PORT": str(ports[0]), "GLOBALDNS_HTTP_PORT": str(ports[1])}
        return {**env, **dns_http}, f"http://127.0.0.1:{ports[1]}/readyz"

    command = [str(BIN / "globaldns"), "--log-level", args.log_level, "resolver"]
    resolver, cold = start_http(procs, "resolver", command, env_for, timeout=timeout)
    return resolver, ports[0], f"http://127.0.0.1:{ports[1]}", cold


# -- building the registry through its API ----------------------------------------------


class LoadHeartbeats:
    """Heartbeats for the clusters loaded so far while the others load (a thread).

    Loading 30 whole states takes longer than a lease lasts: without them the first
    clusters would be out of the answers (and come back, all their services rebuilt)
    by the time the resolver starts. The agent processes take over after the load.
    """

    def __init__(self, servers: Servers, interval_s: float) -> None:
        self.servers = servers
        self.interval_s = interval_s
        self.seqs: dict[str, int] = {}
        self.stopped = threading.Event()
        self.failures = 0
        self.thread = threading.Thread(target=self._run, name="load-heartbeats", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        port = int(self.servers.registry_url.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            while not self.stopped.wait(self.interval_s):
                for name, seq in list(self.seqs.items()):
                    headers = {
                        "Authorization": f"Bearer {self.servers.tokens[name]}",
                        "Content-Type": "application/json",
                    }
                    try:
                        conn.request("POST", "/v1/heartbeats", json.dumps({"seq": seq}), headers)
                        response = conn.getresponse()
                        response.read()
                        self.failures += response.status != 200
                    except (OSError, http.client.HTTPException):
                        self.failures += 1
                        conn.close()
        finally:
            conn.close()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=60)


def load_registry(scenario: Scenario, servers: Servers, beats: LoadHeartbeats) -> dict[str, Any]:
    """One gzip whole-state report per cluster, in turn; returns timings and sizes."""
    port = int(servers.registry_url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1800)
    per_cluster, seqs = [], {}
    try:
        for i, name in enumerate(scenario.cluster_names()):
            seq = time.time_ns()
            t0 = time.monotonic()
            body, raw = world.gzipped(world.whole_state_chunks(scenario, i, seq))
            t1 = time.monotonic()
            headers = {
                "Authorization": f"Bearer {servers.tokens[name]}",
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
            }
            conn.request("POST", "/v1/reports", body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read()
            t2 = time.monotonic()
            if response.status != 200:
                raise BenchError(
                    f"whole-state report of {name}: {response.status} {answer[:500]!r}"
                )
            seqs[name] = beats.seqs[name] = seq
            per_cluster.append(
                {
                    "cluster": name,
                    "raw_bytes": raw,
                    "gzip_bytes": len(body),
                    "build_s": t1 - t0,
                    "post_s": t2 - t1,
                    "answer": json.loads(answer),
                }
            )
            if i < 3 or i % 10 == 9:
                print(
                    f"    {name}: {raw / MB:.1f} MB JSON, {len(body) / MB:.2f} MB gzip, "
                    f"accepted in {t2 - t1:.2f} s",
                    flush=True,
                )
    finally:
        conn.close()
    return {"clusters": per_cluster, "seqs": seqs}


# -- agent processes --------------------------------------------------------------------


class AgentPool:
    """A few processes of simulated agents, each owning every Nth cluster."""

    def __init__(
        self,
        count: int,
        scenario: Scenario,
        servers: Servers,
        seqs: dict[str, int],
        heartbeat_s: float,
    ) -> None:
        ctx = multiprocessing.get_context("fork")
        self.count = max(1, min(count, scenario.clusters))
        self.owner: dict[int, Any] = {}
        self.conns: list[Any] = []
        self.processes: list[Any] = []
        self.final: list[dict[str, Any]] = []
        for k in range(self.count):
            mine = [
                (i, name, servers.tokens[name], seqs[name])
                for i, name in enumerate(scenario.cluster_names())
                if i % self.count == k
            ]
            parent, child = ctx.Pipe()
            process = ctx.Process(
                target=agent_process,
                args=(child, servers.registry_url, scenario, mine, heartbeat_s, 1000 + k),
                daemon=True,
                name=f"scale-agents-{k}",
            )
            process.start()
            child.close()
            self.conns.append(parent)
            self.processes.append(process)
            for i, *_ in mine:
                self.owner[i] = parent
        self.share = [
            sum(1 for i in range(scenario.clusters) if i % self.count == k) / scenario.clusters
            for k in range(self.count)
        ]

    @staticmethod
    def expect(conn: Any, tag: str, timeout: float = 120.0) -> tuple[Any, ...]:
        if not conn.poll(timeout):
            raise BenchError(f"agent process: no answer to {tag!r} within {timeout:.0f} s")
        reply: tuple[Any, ...] = conn.recv()
        if reply[0] == "error":
            raise BenchError(f"agent process: {reply[1]}")
        if reply[0] != tag:
            raise BenchError(f"agent process: expected {tag!r}, got {reply[0]!r}")
        return reply

    def ask_all(self, message: tuple[Any, ...], timeout: float = 120.0) -> list[tuple[Any, ...]]:
        for conn in self.conns:
            conn.send(message)
        return [self.expect(conn, message[0], timeout) for conn in self.conns]

    def churn(self, rate: float) -> None:
        for conn, share in zip(self.conns, self.share, strict=True):
            conn.send(("churn", rate * share))
        for conn in self.conns:
            self.expect(conn, "churn")

    def stats(self) -> list[dict[str, Any]]:
        return [reply[1] for reply in self.ask_all(("stats",))]

    def cpu(self) -> float:
        total = 0.0
        for process in self.processes:
            with contextlib.suppress(OSError):
                total += cpu_seconds(process.pid)
        return total

    def stop(self) -> None:
        for conn, process in zip(self.conns, self.processes, strict=True):
            with contextlib.suppress(OSError, BrokenPipeError):
                conn.send(("stop",))
            with contextlib.suppress(BenchError, OSError, EOFError):
                self.final.append(self.expect(conn, "stopped", timeout=10)[1])
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
            conn.close()


def counts(stats: list[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for s in stats:
        for key, value in s["counts"].items():
            total[key] = total.get(key, 0) + value
    return total


def accepted_deltas(c: dict[str, int]) -> int:
    return sum(v for k, v in c.items() if k.endswith("_ok") and not k.startswith("heartbeat"))


# -- measurements -----------------------------------------------------------------------


def histogram(url: str, name: str = "globaldns_propagation_seconds") -> dict[str, float] | None:
    """The cumulative buckets of a histogram on ``url``/metrics, summed over its labels."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body = http_get(url + "/metrics", timeout=10)
    if status != 200:
        return None
    buckets: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                le = sample.labels["le"]
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return buckets or None


def histogram_quantile(
    before: dict[str, float] | None, after: dict[str, float], q: float
) -> float | None:
    """Prometheus's histogram_quantile over the increase between two scrapes."""
    rows = sorted(
        ((float(le), after[le] - (before or {}).get(le, 0.0)) for le in after),
        key=lambda row: row[0],
    )
    if not rows or rows[-1][1] <= 0:
        return None
    rank = q * rows[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in rows:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            span = count - lower_count
            return lower_bound + (bound - lower_bound) * (
                (rank - lower_count) / span if span else 1
            )
        lower_bound, lower_count = bound, count
    return rows[-1][0]


@dataclass
class Usage:
    """CPU seconds of the processes that matter, at one moment."""

    at: float
    registry: float
    resolver: float
    redis: float
    agents: float

    clients: float
    """This process (the flip poller) and the DNS latency stream."""
    machine: float
    """Every CPU's busy time (``/proc/stat``): what is not ours is another process's."""

    @classmethod
    def now(cls, servers: Servers, resolver: Proc, agents: AgentPool | None, *extra: int) -> Usage:
        clients = cpu_seconds(os.getpid())
        for pid in extra:
            with contextlib.suppress(OSError):
                clients += cpu_seconds(pid)
        return cls(
            time.monotonic(),
            servers.registry.cpu(),
            resolver.cpu(),
            servers.redis.cpu(),
            agents.cpu() if agents is not None else 0.0,
            clients,
            machine_busy_seconds(),
        )

    def share(self, later: Usage) -> dict[str, float]:
        span = max(1e-9, later.at - self.at)
        out = {"seconds": later.at - self.at}
        for name in ("registry", "resolver", "redis", "agents", "clients", "machine"):
            out[name] = (getattr(later, name) - getattr(self, name)) / span
        ours = sum(out[k] for k in ("registry", "resolver", "redis", "agents", "clients"))
        out["others"] = max(0.0, out["machine"] - ours)
        return out


def machine_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (all CPUs; ``/proc/stat``)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu "):
            v = [int(x) for x in line.split()[1:9]]
            return (sum(v) - v[3] - v[4]) / CLK_TCK  # less idle and iowait
    return 0.0


def flips(
    scenario: Scenario,
    agents: AgentPool,
    dns_port: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Flip one endpoint at a time; the time from its POST to the first answer showing it."""
    pairs = [(c, j) for j in range(scenario.flip_services) for c in range(scenario.clusters)]
    random.Random(5).shuffle(pairs)
    flipped: dict[tuple[int, int], set[int]] = {}
    poller = Poller(dns_port)
    propagation, acks, failures, unseen = [], [], [], 0
    unseen_detail: list[dict[str, Any]] = []
    got = None
    started = time.monotonic()
    posted = 0
    try:
        for k in range(args.flips):
            if time.monotonic() - started > args.flips_budget_s:
                break
            # Flips come in twos: an endpoint leaves, then comes back, so that at most one
            # endpoint of a flip service is out at a time (with one endpoint per cluster,
            # all of them out would answer the last known good, not a change).
            index = k // 2
            c, j = pairs[index % len(pairs)]
            e = (index // len(pairs)) % min(world.MAX_ANSWERS, scenario.endpoints)
            target = world.address(scenario, c, j, e)
            mine = flipped.setdefault((c, j), set())
            ready_after = world.initially_ready(scenario, j, e) != (e not in mine)
            wire = query_wire(world.qname(j), world.cluster_subnet(c))
            conn = agents.owner[c]
            conn.send(("flip", c, j, e))
            posted += 1
            deadline = time.monotonic() + args.flip_timeout_s
            seen, reply = None, None
            while time.monotonic() < deadline:
                got = poller.ask(wire)
                if got is not None and (target in got[1]) == ready_after:
                    seen = time.monotonic()
                    break
                if reply is None and conn.poll():
                    reply = AgentPool.expect(conn, "flip")
                    if reply[3] != 200:
                        break
                time.sleep(args.poll_ms / 1000)
            if reply is None:
                reply = AgentPool.expect(conn, "flip")
            _, t_post, t_ack, status, payload = reply
            if status != 200:
                failures.append(f"{status} {str(payload)[:200]}")
                if len(failures) >= 20:
                    raise BenchError(f"20 flips refused, the last: {failures[-1]}")
                continue
            mine ^= {e}
            acks.append(t_ack - t_post)
            if seen is None:
                unseen += 1
                if len(unseen_detail) < 10:
                    unseen_detail.append(
                        {
                            "cluster": c,
                            "service": j,
                            "endpoint": target,
                            "ready_after": ready_after,
                            "last_answer": sorted(got[1]) if got is not None else None,
                            "answer": payload,
                        }
                    )
            else:
                propagation.append(seen - t_post)
            time.sleep(args.flip_gap_ms / 1000)
    finally:
        poller.close()
    return {
        "posted": posted,
        "seen": len(propagation),
        "unseen": unseen,
        "unseen_detail": unseen_detail,
        "refused": failures,
        "seconds": time.monotonic() - started,
        "propagation_s": propagation,
        "ack_s": acks,
        "poll_rtt_s": poller.rtts,
        "poll_queries": poller.queries,
        "poll_timeouts": poller.timeouts,
    }


def sanity_check(scenario: Scenario, dns_port: int) -> str | None:
    """The first flip service's answer for cluster 0's clients is its ready endpoints."""
    poller = Poller(dns_port, timeout_s=2)
    try:
        got = poller.ask(query_wire(world.qname(0), world.cluster_subnet(0)))
    finally:
        poller.close()
    expected = {
        world.address(scenario, 0, 0, e)
        for e in range(scenario.endpoints)
        if world.initially_ready(scenario, 0, e)
    }
    if got is None:
        return "no answer"
    if got[1] != expected:
        return f"rcode {got[0]}, answer {sorted(got[1])}, expected {sorted(expected)}"
    return None


def run_scenario(scenario: Scenario, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    workdir = root / scenario.key
    workdir.mkdir()
    out: dict[str, Any] = {
        "scenario": asdict(scenario),
        "label": scenario.label,
        "metrics": {},
        "notes": [],
    }
    m = out["metrics"]
    m["endpoints"] = scenario.total_endpoints
    procs = Processes(workdir)
    agents: AgentPool | None = None
    try:
        print(f"\n== {scenario.key}: {scenario.label} endpoints", flush=True)
        servers = start_backend(procs, scenario, args)
        empty = redis_info(servers.redis_url)
        out["redis_empty"] = pick_redis(empty)
        print("  registry up; loading whole states ...", flush=True)
        beats = LoadHeartbeats(servers, args.heartbeat_s)
        try:
            load = load_registry(scenario, servers, beats)
            # The agents heartbeat from now on, through the resolver's cold load too.
            agents = AgentPool(args.agents, scenario, servers, load["seqs"], args.heartbeat_s)
            time.sleep(args.heartbeat_s)
        finally:
            beats.stop()
        if beats.failures:
            out["notes"].append(f"{beats.failures} heartbeats failed during the load")
        out["load"] = {k: v for k, v in load.items() if k != "seqs"}
        m["load_s"] = sum(c["post_s"] for c in load["clusters"])
        raw = statistics.mean(c["raw_bytes"] for c in load["clusters"]) / 1024
        packed = statistics.mean(c["gzip_bytes"] for c in load["clusters"]) / 1024
        m["whole_state_kb"] = f"{raw:,.0f} / {packed:,.0f}"
        info = redis_info(servers.redis_url)
        out["redis_after_load"] = pick_redis(info)
        m["redis_mb"] = info["used_memory"] / MB
        m["redis_bytes_per_ep"] = (
            info["used_memory"] - empty["used_memory"]
        ) / scenario.total_endpoints

        timeout = args.ready_timeout_s or max(60.0, scenario.total_endpoints / 3e6 * 900)
        print(f"  starting the resolver (waits up to {timeout:.0f} s) ...", flush=True)
        resolver, dns_port, resolver_url, cold = start_resolver(
            procs, servers.redis_url, args, timeout
        )
        m["cold_load_s"] = cold
        print(f"  resolver ready after {cold:.2f} s", flush=True)
        problem = sanity_check(scenario, dns_port)
        if problem:
            out["notes"].append(f"first answer not as expected: {problem}")

        time.sleep(args.settle_s)
        rss = memory(resolver.pid)
        m["rss_mb"] = rss["VmRSS"] / MB
        m["rss_bytes_per_ep"] = rss["VmRSS"] / scenario.total_endpoints
        out["resolver_memory_after_load"] = rss
        print(f"  resolver RSS {m['rss_mb']:.0f} MB; idle for {args.idle_s:g} s ...", flush=True)
        before = Usage.now(servers, resolver, agents)
        time.sleep(args.idle_s)
        idle = before.share(Usage.now(servers, resolver, agents))
        out["idle"] = idle
        m["idle_cpu_pct"] = idle["resolver"] * 100
        m["idle_others_pct"] = idle["others"] * 100

        probe = agents.expect(_send(agents.conns[0], ("probe",)), "probe")
        out["probe"] = {"status": probe[1], "answer": probe[2], "body_bytes": probe[3]}
        if probe[1] != 200:
            raise BenchError(
                f"the registry refused a delta report ({probe[1]}: {str(probe[2])[:300]}): "
                "this registry does not take the delta contract yet"
            )
        if not isinstance(probe[2], dict) or "changed" not in probe[2]:
            raise BenchError(
                "the registry answered a delta with 200 but without 'changed': it stored it "
                "as a whole state (the cluster now holds one service); this registry does "
                "not apply deltas yet, so the delta phases cannot run"
            )
        churn_phase(scenario, args, servers, resolver, resolver_url, dns_port, agents, out)
        throughput_phase(args, servers, resolver, agents, out)

        info = redis_info(servers.redis_url)
        out["redis_at_end"] = pick_redis(info)
        out["resolver_memory_at_end"] = memory(resolver.pid)
    except (BenchError, StartError) as exc:
        out["error"] = str(exc)
        print(f"  stopped: {exc}", flush=True)
    except Exception as exc:  # a bug of the benchmark: the other sizes still run
        out["error"] = f"{exc.__class__.__name__}: {exc}\n{traceback.format_exc()}"
        print(f"  failed: {out['error']}", flush=True)
    finally:
        if agents is not None:
            agents.stop()
            out["agents_final"] = [
                {k: v for k, v in s.items() if k not in ("latencies_s", "body_bytes")}
                for s in agents.final
            ]
        for proc in list(procs.started):
            if not proc.alive():
                out["notes"].append(
                    f"{proc.name} had exited ({proc.process.returncode}):\n{log_tail(proc.log)}"
                )
        procs.stop_all()
    return out


def _send(conn: Any, message: tuple[Any, ...]) -> Any:
    conn.send(message)
    return conn


def pick_redis(info: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "used_memory",
        "used_memory_rss",
        "used_memory_peak",
        "mem_fragmentation_ratio",
        "dbsize",
        "total_commands_processed",
        "total_net_input_bytes",
        "total_net_output_bytes",
        "used_cpu_sys",
        "used_cpu_user",
        "redis_version",
    )
    return {k: info.get(k) for k in keys}


def churn_phase(
    scenario: Scenario,
    args: argparse.Namespace,
    servers: Servers,
    resolver: Proc,
    resolver_url: str,
    dns_port: int,
    agents: AgentPool,
    out: dict[str, Any],
) -> None:
    m = out["metrics"]
    ctx = multiprocessing.get_context("fork")
    stop, results = ctx.Event(), ctx.Queue()
    names = [world.qname(j) for j in range(scenario.services)]
    subnets = [world.cluster_subnet(i) for i in range(scenario.clusters)]
    stream = ctx.Process(
        target=latency_stream,
        args=(dns_port, names, subnets, args.dns_interval_ms / 1000, stop, results),
        daemon=True,
        name="scale-dns-latency",
    )
    hist_before = histogram(resolver_url)
    info_before = redis_info(servers.redis_url)
    stats_before = counts(agents.stats())
    print(
        f"  churn {args.churn_rate:g}/s, DNS queries every {args.dns_interval_ms:g} ms, "
        f"{args.flips} flips (at most {args.flips_budget_s:g} s) ...",
        flush=True,
    )
    stream.start()
    try:
        usage_before = Usage.now(servers, resolver, agents, stream.pid)
        agents.churn(args.churn_rate)
        time.sleep(1.0)
        flipped = flips(scenario, agents, dns_port, args)
        agents.churn(0)
        usage = usage_before.share(Usage.now(servers, resolver, agents, stream.pid))
    finally:
        stop.set()
        try:
            latency = results.get(timeout=30)
        except Exception:
            latency = None
        stream.join(timeout=5)
        if stream.is_alive():
            stream.kill()
            stream.join()
    stats_after = agents.stats()
    after = counts(stats_after)
    info_after = redis_info(servers.redis_url)
    hist_after = histogram(resolver_url)

    changes = accepted_deltas(after) - accepted_deltas(stats_before)
    out["churn"] = {
        "usage": usage,
        "changes": changes,
        "counts_before": stats_before,
        "counts_after": after,
        "flips": {k: v for k, v in flipped.items() if k not in ("ack_s", "poll_rtt_s")},
        "last_errors": [s["last_error"] for s in stats_after if s["last_error"]],
    }
    # A flip that never showed counts as slower than any that did (not as absent).
    prop = flipped["propagation_s"] + [math.inf] * flipped["unseen"]
    m["prop_p50_ms"] = _ms(percentile(prop, 50))
    m["prop_p99_ms"] = _ms(percentile(prop, 99))
    m["prop_max_ms"] = _ms(max(prop) if prop else None)
    m["flips"] = f"{flipped['seen']} / {flipped['posted']}"
    m["ack_p50_ms"] = _ms(percentile(flipped["ack_s"], 50))
    if flipped["posted"] < args.flips:
        out["notes"].append(
            f"only {flipped['posted']} of {args.flips} flips fitted in {args.flips_budget_s:g} s"
        )
    if flipped["unseen"]:
        out["notes"].append(
            f"{flipped['unseen']} flips never showed in {args.flip_timeout_s:g} s "
            "(counted as slower than every other: shown as inf)"
        )
    if hist_after is not None:
        out["histogram"] = {"before": hist_before, "after": hist_after}
        m["hist_p50_ms"] = _ms(histogram_quantile(hist_before, hist_after, 0.5))
        m["hist_p99_ms"] = _ms(histogram_quantile(hist_before, hist_after, 0.99))
    else:
        out["notes"].append("the resolver exports no globaldns_propagation_seconds histogram")
    rtts = flipped["poll_rtt_s"]
    m["hot_p50_ms"] = _ms(percentile(rtts, 50))
    m["hot_p99_ms"] = _ms(percentile(rtts, 99))
    m["hot_max_ms"] = _ms(max(rtts) if rtts else None)
    if latency is not None:
        lat = [v / 1e6 for v in latency["latencies_us"]]
        m["dns_p50_ms"] = _ms(percentile(lat, 50))
        m["dns_p99_ms"] = _ms(percentile(lat, 99))
        m["dns_max_ms"] = _ms(max(lat) if lat else None)
        m["dns_lost"] = f"{latency['lost']} / {latency['sent']}"
        out["dns_latency"] = {k: v for k, v in latency.items() if k != "latencies_us"}
        out["dns_latency"]["buckets_ms"] = latency_buckets(lat)
    churned = after.get("churn_ok", 0) - stats_before.get("churn_ok", 0)
    m["churn_per_s"] = churned / usage["seconds"]
    sizes = [b for s in stats_after for b in s["body_bytes"]]
    gz = [b for s in stats_after for b in s["gzip_bytes"]]
    m["delta_bytes"] = statistics.mean(sizes) if sizes else None
    out["delta_body_bytes"] = {
        "mean": m["delta_bytes"],
        "max": max(sizes) if sizes else None,
        "gzip_mean": statistics.mean(gz) if gz else None,
    }
    if changes:
        m["registry_cpu_ms"] = usage["registry"] * usage["seconds"] / changes * 1000
        m["redis_cpu_ms"] = usage["redis"] * usage["seconds"] / changes * 1000
        out["redis_per_change"] = {
            "commands": (
                info_after["total_commands_processed"] - info_before["total_commands_processed"]
            )
            / changes,
            "net_input_bytes": (
                info_after["total_net_input_bytes"] - info_before["total_net_input_bytes"]
            )
            / changes,
        }
    m["resolver_churn_cpu_pct"] = usage["resolver"] * 100
    m["churn_others_pct"] = usage["others"] * 100


def throughput_phase(
    args: argparse.Namespace,
    servers: Servers,
    resolver: Proc,
    agents: AgentPool,
    out: dict[str, Any],
) -> None:
    m = out["metrics"]
    print(f"  throughput: every chain back to back for {args.throughput_s:g} s ...", flush=True)
    before = Usage.now(servers, resolver, agents)
    replies = agents.ask_all(("throughput", args.throughput_s), timeout=args.throughput_s + 120)
    usage = before.share(Usage.now(servers, resolver, agents))
    done = [r[1] for r in replies]
    accepted = sum(d["accepted"] for d in done)
    seconds = max(d["seconds"] for d in done)
    stats = agents.stats()
    lat = [v for s in stats for v in s["latencies_s"].get("throughput", [])]
    out["throughput"] = {
        "accepted": accepted,
        "seconds": seconds,
        "chains": sum(d["chains"] for d in done),
        "agent_processes": agents.count,
        "usage": usage,
        "post_p50_ms": _ms(percentile(lat, 50)),
        "post_p99_ms": _ms(percentile(lat, 99)),
        "counts": counts(stats),
    }
    m["reports_per_s"] = accepted / seconds
    m["tp_post_p50_ms"] = out["throughput"]["post_p50_ms"]
    m["tp_registry_cpu_pct"] = usage["registry"] * 100
    m["tp_resolver_cpu_pct"] = usage["resolver"] * 100
    m["tp_redis_cpu_pct"] = usage["redis"] * 100
    m["tp_clients_cpu_pct"] = usage["agents"] * 100
    m["tp_others_pct"] = usage["others"] * 100


def marginal(runs: list[dict[str, Any]]) -> None:
    """Resolver RSS per endpoint above the smallest registry's (the process's fixed cost)."""
    base = next((r for r in runs if r["scenario"]["key"] == "small"), None)
    if base is None or "rss_mb" not in base["metrics"]:
        return
    for r in runs:
        m = r["metrics"]
        if r is base or "rss_mb" not in m:
            continue
        extra = m["endpoints"] - base["metrics"]["endpoints"]
        m["rss_marginal_per_ep"] = (m["rss_mb"] - base["metrics"]["rss_mb"]) * MB / extra


def latency_buckets(values: list[float]) -> dict[str, int]:
    edges = (0.5, 1, 2, 5, 10, 20, 50, 100, 1000)
    out = {f"<= {e:g} ms": sum(1 for v in values if v * 1000 <= e) for e in edges}
    out["> 1000 ms"] = sum(1 for v in values if v * 1000 > 1000)
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


# -- the report -------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])

    def git(*command: str) -> str:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            return subprocess.run(
                ["git", *command], cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout.strip()
        return ""

    try:
        import uvloop

        loop = f"uvloop {uvloop.__version__}"
    except ImportError:
        loop = "asyncio"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "event_loop": loop,
        "loadavg_before": os.getloadavg(),
        "commit": git("rev-parse", "--short", "HEAD"),
        "commit_subject": git("log", "-1", "--format=%s"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def cell(value: Any, fmt: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, str):
        return value
    return format(value, fmt)


def table(result: dict[str, Any], markdown: bool) -> str:
    runs = result["scenarios"]
    heads = [r["scenario"]["key"] for r in runs]
    rows = []
    for key, label, unit, fmt in ROWS:
        cells = []
        target_texts = []
        for r in runs:
            value = r["metrics"].get(key)
            target = target_for(r["scenario"]["key"], key)
            text = cell(value, fmt)
            if target is not None:
                met = target.met(value if isinstance(value, (int, float)) else None)
                text += "" if met is None else (" ✓" if met else " ✗")
                target_texts.append(f"{r['scenario']['key']} {target.text(unit.strip())}")
            cells.append(text)
        rows.append((label, cells, "; ".join(target_texts)))
    if markdown:
        lines = [
            "| metric | " + " | ".join(heads) + " | target |",
            "|---|" + "---:|" * len(heads) + "---|",
        ]
        lines += [f"| {label} | " + " | ".join(c) + f" | {t} |" for label, c, t in rows]
        return "\n".join(lines)
    width = max(len(label) for label, _, _ in rows) + 2
    lines = [f"{'':{width}}" + "".join(f"{h:>16}" for h in heads) + "   target"]
    for label, c, t in rows:
        lines.append(f"{label:{width}}" + "".join(f"{x:>16}" for x in c) + f"   {t}")
    return "\n".join(lines)


def target_for(scenario_key: str, metric: str) -> Target | None:
    if scenario_key in TARGETS:
        return TARGETS[scenario_key].get(metric)
    stand_in = STANDS_FOR.get(scenario_key)
    if stand_in is not None and metric not in SIZE_DEPENDENT:
        return TARGETS[stand_in].get(metric)
    return None


def header(result: dict[str, Any]) -> list[str]:
    mach, cfg = result["machine"], result["config"]
    return [
        f"globaldns scale benchmark, {result['date']}",
        f"command: {result['command']}",
        f"machine: {mach['nproc']} CPUs ({mach['cpu_model']}), {mach['memory_gb']} GB, "
        f"Linux {mach['kernel']}, Python {mach['python']}, {mach['event_loop']}",
        f"code: {mach['commit']} {mach['commit_subject']}" + (" (dirty)" if mach["dirty"] else ""),
        f"redis: {result.get('redis_version', '?')}",
        "every process (Redis, registry, resolver, agents, DNS clients) shares these CPUs: "
        "the measuring clients take CPU the servers would otherwise have",
        f"churn {cfg['churn_rate']:g} deltas/s; DNS query every {cfg['dns_interval_ms']:g} ms; "
        f"flip polls every {cfg['poll_ms']:g} ms; {cfg['agents']} agent process(es); "
        f"heartbeats every {cfg['heartbeat_s']:g} s; lease TTL {cfg['lease_ttl_s']:g} s; "
        f"log level {cfg['log_level']}",
    ]


def notes(result: dict[str, Any]) -> list[str]:
    lines = []
    for r in result["scenarios"]:
        key = r["scenario"]["key"]
        if "error" in r:
            lines.append(f"{key}: STOPPED: {r['error']}")
        lines += [f"{key}: {n}" for n in r["notes"]]
    if any(k in STANDS_FOR for k in (r["scenario"]["key"] for r in result["scenarios"])):
        lines.append(
            "quick run: smaller sizes; the size-independent targets of 300k / 3M are shown "
            "for reference, cold load and RSS targets are not"
        )
    return lines


def finite(value: Any) -> Any:
    """The result with infinities as the string "inf" (JSON has no infinity)."""
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def write(result: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    stem = f"scale-{time.strftime('%Y%m%d-%H%M%S')}" + (
        "-quick" if result["config"]["quick"] else ""
    )
    json_path = out / f"{stem}.json"
    json_path.write_text(json.dumps(finite(result), indent=2, default=str) + "\n")
    md = [f"# {header(result)[0]}", ""]
    md += [f"- {line}" for line in header(result)[1:]]
    md += ["", table(result, markdown=True), ""]
    md += [f"- {line}" for line in notes(result)]
    md_path = out / f"{stem}.md"
    md_path.write_text("\n".join(md) + "\n")
    return json_path, md_path


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, shorter phases")
    parser.add_argument("--skip-3m", action="store_true", help="leave out 30 x 10,000 x 10")
    parser.add_argument("--only", help="comma-separated scenario keys (small,300k,3m)")
    parser.add_argument("--flips", type=int, default=1000, help="single-endpoint flips timed")
    parser.add_argument("--flips-budget-s", type=float, default=300, help="stop flipping after")
    parser.add_argument("--flip-timeout-s", type=float, default=10, help="give up on one flip")
    parser.add_argument("--flip-gap-ms", type=float, default=10, help="pause between flips")
    parser.add_argument("--poll-ms", type=float, default=1, help="pause between flip polls")
    parser.add_argument("--churn-rate", type=float, default=100, help="background deltas/s")
    parser.add_argument("--dns-interval-ms", type=float, default=5, help="latency stream")
    parser.add_argument("--idle-s", type=float, default=10, help="idle CPU window")
    parser.add_argument("--settle-s", type=float, default=3, help="pause after the cold load")
    parser.add_argument("--throughput-s", type=float, default=10, help="throughput window")
    parser.add_argument("--agents", type=int, default=2, help="agent processes")
    parser.add_argument("--heartbeat-s", type=float, default=2.0, help="agents' lease renewal")
    parser.add_argument("--lease-ttl-s", type=float, default=60.0, help="registry/resolver")
    parser.add_argument("--ready-timeout-s", type=float, help="resolver cold load limit")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--redis-server", help="redis-server binary (default: system's)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    args = parser.parse_args(argv)
    if args.quick:
        args.flips = min(args.flips, 200)
        args.flips_budget_s = min(args.flips_budget_s, 60)
        args.idle_s = min(args.idle_s, 3)
        args.settle_s = min(args.settle_s, 1)
        args.throughput_s = min(args.throughput_s, 3)
    return args


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    chosen = list(QUICK if args.quick else FULL)
    if args.skip_3m:
        chosen = [s for s in chosen if s.clusters < 30]
    if args.only:
        keys = set(args.only.split(","))
        chosen = [s for s in chosen if s.key in keys]
    return chosen


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(["bench/scale.py", *argv]),
        "machine": machine(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "targets": {k: {m: asdict(t) for m, t in v.items()} for k, v in TARGETS.items()},
        "scenarios": [],
    }
    with contextlib.ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="globaldns-scale-"))
        if not args.keep:
            stack.callback(shutil.rmtree, root, ignore_errors=True)
        else:
            print(f"logs under {root}")
        for scenario in scenarios(args):
            run = run_scenario(scenario, args, root)
            result["scenarios"].append(run)
            version = (run.get("redis_after_load") or {}).get("redis_version")
            result.setdefault("redis_version", version)
    result["machine"]["loadavg_after"] = os.getloadavg()
    marginal(result["scenarios"])
    print()
    print("\n".join(header(result)))
    print()
    print(table(result, markdown=False))
    for line in notes(result):
        print(line)
    json_path, md_path = write(result, args.out)
    for path in (json_path, md_path):
        print(f"written: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 1 if all("error" in r for r in result["scenarios"]) else 0


if __name__ == "__main__":
    # Ctrl-C and SIGTERM unwind through every `finally`, which stops what was started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("\ninterrupted: everything it started is stopped", file=sys.stderr)
        sys.exit(130)
