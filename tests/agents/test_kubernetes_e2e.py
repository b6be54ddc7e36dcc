"""End to end: two clusters' Kubernetes agents, the registry, Redis and the resolver.

Each cluster has its own test apiserver (TLS, its own apiserver token) and its own
registry token; us-east-prod runs two agent pods (node-a, node-b), eu-west-prod one.
A client at 127.0.0.1 is in us-east-1, one at 127.0.2.1 in eu-west-1 (the example
topology), so each gets its own cluster's endpoints.

The latency test measures from the moment the apiserver emits a watch event to the
first DNS answer that reflects it; run it with ``-s`` to see the numbers::

    .venv/bin/pytest -q -s tests/agents/test_kubernetes_e2e.py -k latency
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rdatatype
import pytest

from tests.agents import k8s
from tests.agents.apiserver import TestApiserver
from tests.helpers import addresses, eventually, registry, resolver

pytestmark = pytest.mark.e2e

NAME = "web.production.global.example.com"
US = [k8s.Pod(f"us-{i}", f"10.10.0.{i}", node="node-a" if i % 2 else "node-b") for i in range(1, 4)]
EU = [k8s.Pod(f"eu-{i}", f"10.20.0.{i}", node="node-a") for i in range(1, 3)]


@dataclass
class World:
    us: TestApiserver
    eu: TestApiserver
    registry_url: str
    dns_port: int
    us_pods: list[k8s.Pod]
    svc: dict[str, object]


async def ask(
    port: int, name: str = NAME, rdtype: str = "A", source: str = "127.0.0.1"
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    return await dns.asyncquery.udp(query, "127.0.0.1", port=port, source=source, timeout=1.0)


async def answer(port: int, source: str = "127.0.0.1") -> set[str]:
    return set(addresses(await ask(port, source=source)))


@contextlib.asynccontextmanager
async def world(redis_url: str, tmp_path: Path) -> AsyncIterator[World]:
    svc = k8s.service("web", ports=(("http", 80, "http"),))
    us_pods = [k8s.Pod(p.name, p.ip, node=p.node) for p in US]
    async with (
        k8s.apiserver(tmp_path / "us", token="us-east-apiserver-token") as us,
        k8s.apiserver(tmp_path / "eu", token="eu-west-apiserver-token") as eu,
        registry(redis_url) as api,
        # The test asks as the clusters' CoreDNS would: exempt from rate limiting.
        resolver(redis_url, rrl_exempt=("127.0.0.0/8",)) as bound,
    ):
        k8s.apply(us.store, svc, us_pods)  # type: ignore[arg-type]
        k8s.apply(eu.store, svc, EU)  # type: ignore[arg-type]
        yield World(us, eu, api, bound.dns_port, us_pods, svc)


def us_agent(w: World, tmp_path: Path, node: str, pod: str | None = None) -> k8s.Any:
    return k8s.k8s_agent(w.us, tmp_path, w.registry_url, cluster="us-east-prod", node=node, pod=pod)


def eu_agent(w: World, tmp_path: Path, pod: str | None = None) -> k8s.Any:
    return k8s.k8s_agent(
        w.eu, tmp_path, w.registry_url, cluster="eu-west-prod", node="node-a", pod=pod
    )


def set_ready(w: World, index: int, ready: bool) -> None:
    w.us_pods[index].ready = ready
    k8s.apply(w.us.store, w.svc, w.us_pods)  # type: ignore[arg-type]


async def until(
    port: int, wanted: set[str], source: str = "127.0.0.1", timeout: float = 3.0
) -> float:
    """Seconds until the answer is ``wanted``."""
    started = time.monotonic()
    while (await answer(port, source)) != wanted:
        assert time.monotonic() - started < timeout, f"answer never became {sorted(wanted)}"
        await asyncio.sleep(0.002)
    return time.monotonic() - started


async def test_pods_turning_not_ready_and_new_pods_reach_dns_within_1s(
    redis_url: str, tmp_path: Path
) -> None:
    async with (
        world(redis_url, tmp_path) as w,
        us_agent(w, tmp_path, "node-a"),
        us_agent(w, tmp_path, "node-b"),
        eu_agent(w, tmp_path),
    ):
        await until(w.dns_port, {p.ip for p in US}, timeout=10)
        await until(w.dns_port, {p.ip for p in EU}, source="127.0.2.1", timeout=10)

        set_ready(w, 1, False)
        assert await until(w.dns_port, {US[0].ip, US[2].ip}) < 1.0

        w.us_pods.append(k8s.Pod("us-4", "10.10.0.4", node="node-b"))
        k8s.apply(w.us.store, w.svc, w.us_pods)  # type: ignore[arg-type]
        assert await until(w.dns_port, {US[0].ip, US[2].ip, "10.10.0.4"}) < 1.0
        # The other cluster's answer did not move.
        assert await answer(w.dns_port, "127.0.2.1") == {p.ip for p in EU}


async def test_an_agent_restart_never_drops_a_healthy_endpoint(
    redis_url: str, tmp_path: Path
) -> None:
    us_all, eu_all = {p.ip for p in US}, {p.ip for p in EU}
    seen: list[tuple[str, set[str]]] = []
    stop = asyncio.Event()
    async with world(redis_url, tmp_path) as w, contextlib.AsyncExitStack() as pods:
        a1 = await pods.enter_async_context(us_agent(w, tmp_path, "node-a", pod="agent-a-1"))
        await eventually(a1.source.reporting)
        b = await pods.enter_async_context(us_agent(w, tmp_path, "node-b"))
        eu1 = await pods.enter_async_context(eu_agent(w, tmp_path, pod="eu-agent-1"))
        await until(w.dns_port, us_all, timeout=10)
        await until(w.dns_port, eu_all, source="127.0.2.1", timeout=10)

        async def watch() -> None:
            while not stop.is_set():
                seen.append(("us", await answer(w.dns_port)))
                seen.append(("eu", await answer(w.dns_port, "127.0.2.1")))
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        # us-east's leader pod restarts (a DaemonSet rolling update): node-b takes over.
        a1.stop.set()
        await a1.task
        await eventually(b.source.reporting)
        a2 = await pods.enter_async_context(us_agent(w, tmp_path, "node-a", pod="agent-a-2"))
        await eventually(a2.source.ready)
        # eu-west's only pod restarts: nobody reports meanwhile, the registry lease holds.
        eu1.stop.set()
        await eu1.task
        eu2 = await pods.enter_async_context(eu_agent(w, tmp_path, pod="eu-agent-2"))
        await eventually(lambda: eu2.agent.reports >= 1)
        await asyncio.sleep(0.5)
        stop.set()
        await watcher
    assert a1.agent.reports >= 1 and b.agent.reports >= 1
    assert len(seen) > 50
    dropped = [
        (where, sorted(got)) for where, got in seen if got != (us_all if where == "us" else eu_all)
    ]
    assert dropped == []


async def test_srv_records_carry_the_per_slice_ports(redis_url: str, tmp_path: Path) -> None:
    async with world(redis_url, tmp_path) as w, us_agent(w, tmp_path, "node-a"):
        w.us_pods[2].ports = {"http": 8081}
        k8s.apply(w.us.store, w.svc, w.us_pods)  # type: ignore[arg-type]
        await until(w.dns_port, {p.ip for p in US}, timeout=10)
        response = await ask(w.dns_port, "_http._tcp." + NAME, "SRV")
        ports = sorted(
            rr.port
            for rrset in response.answer
            for rr in rrset
            if rrset.rdtype == dns.rdatatype.SRV
        )
        assert ports == [8080, 8080, 8081]


async def test_watch_event_to_dns_answer_latency(redis_url: str, tmp_path: Path) -> None:
    """Single changes, each after the last one's report has settled (a burst is paced by
    the agent's coalescing instead: at most one report per 50 ms)."""
    changes = 200
    async with world(redis_url, tmp_path) as w, us_agent(w, tmp_path, "node-a"):
        everything = {p.ip for p in US}
        await until(w.dns_port, everything, timeout=10)
        latencies = []
        for n in range(changes):
            ready = n % 2 == 1
            set_ready(w, 0, ready)  # the apiserver emits the watch event here
            wanted = everything if ready else everything - {US[0].ip}
            latencies.append(await until(w.dns_port, wanted))
            await asyncio.sleep(0.1)
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(
        f"\nwatch event -> DNS answer over {changes} changes: "
        f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms"
    )
    assert p99 < 1.0
