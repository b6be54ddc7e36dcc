"""An apiserver outage is not a workload outage: the leader holds the registry lease with
what it reported, reports nothing it cannot know is current, and stops at once when
another pod took the Lease. Agents against the test apiserver, the real registry and Redis.

Outcomes and order are asserted, never how fast: the registry lease is kept alive by
heartbeats that the registry accepted (counted), every report after the outage went out
with every watch resynced (checked as each report was sent).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from agents.reporter import RegistryClient
from globaldns.redis_server import free_port
from registry.model import Report, Service
from registry.store import opened
from tests.agents import k8s
from tests.agents.test_kubernetes_daemonset import NODE_A, listeners, probed_service, verdicts
from tests.helpers import eventually, registry

CLUSTER = "us-east-prod"
LEASE_TTL_S = 3.0
"""The registry's cluster lease in these tests (heartbeats every 0.5 s)."""


async def web(redis_url: str) -> Service | None:
    async with opened(redis_url) as store:
        state = await store.cluster(CLUSTER)
    return {s.key: s for s in state.services}.get("production/web") if state else None


async def addresses(redis_url: str) -> set[str]:
    found = await web(redis_url)
    return {e.address for e in found.endpoints} if found else set()


async def only(redis_url: str, wanted: set[str]) -> bool:
    return await addresses(redis_url) == wanted


async def lease_fresh(api: str) -> bool:
    async with aiohttp.ClientSession() as session, session.get(f"{api}/v1/clusters") as response:
        clusters = {c["name"]: c for c in (await response.json())["clusters"]}
    return bool(clusters[CLUSTER]["lease_fresh"])


@dataclass(frozen=True)
class Sending:
    """The informers as a report went out."""

    seq: int
    stale: tuple[bool, ...]
    requests: tuple[int, ...]
    """Lists and watches each informer had started."""


def requests(pod: k8s.Running) -> tuple[int, ...]:
    return tuple(i.stats.lists + i.stats.watches for i in pod.source.informers)


def watch_reports(pod: k8s.Running) -> list[Sending]:
    """Note, as each report is sent, whether every watch was fresh and how many requests
    each had made: a report after the outage must follow a resync (a list, or a
    re-watch answered) of every informer."""
    seen: list[Sending] = []
    client = pod.client
    send = client.report

    async def report(report: Report) -> int:
        informers = pod.source.informers
        seen.append(
            Sending(
                report.seq,
                tuple(i.stale_since is not None for i in informers),
                requests(pod),
            )
        )
        return await send(report)

    client.report = report  # type: ignore[method-assign]
    return seen


def heartbeats(pod: k8s.Running, since: int, answer: str = "ok") -> int:
    return sum(1 for s in pod.client.sent[since:] if s.kind == "heartbeat" and s.answer == answer)


async def test_an_apiserver_outage_holds_the_lease_and_reports_only_after_a_resync(
    redis_url: str, tmp_path: Path
) -> None:
    pods = [k8s.Pod("w1", "10.1.0.1"), k8s.Pod("w2", "10.1.0.2")]
    async with (
        k8s.apiserver(tmp_path) as server,
        registry(redis_url, lease_ttl_s=LEASE_TTL_S) as api,
    ):
        svc = k8s.service("web")
        k8s.apply(server.store, svc, pods)
        async with k8s.k8s_agent(server, tmp_path, api, apiserver_outage_grace_s=120) as pod:
            await eventually(lambda: addresses(redis_url), timeout=30)
            assert await addresses(redis_url) == {"10.1.0.1", "10.1.0.2"}
            sendings = watch_reports(pod)
            before = requests(pod)
            mark = len(pod.client.sent)
            server.down = True
            await eventually(pod.source.holding)
            # Past its renew deadline, the Lease unrenewed: still the reporter, holding.
            await eventually(lambda: not pod.source.elector.leading())
            assert pod.source.reporting() and pod.source.holding()
            # A pod goes meanwhile (the controller writes it as the apiserver returns).
            k8s.apply(server.store, svc, pods[:1])
            # Heartbeats the registry accepted, for longer than its lease, and no report.
            needed = int(2 * LEASE_TTL_S / 0.5)
            await eventually(lambda: heartbeats(pod, mark) >= needed)
            assert await lease_fresh(api)
            assert pod.client.reports(mark) == []
            assert await addresses(redis_url) == {"10.1.0.1", "10.1.0.2"}
            # Back: the deleted pod leaves, and only after every watch relisted.
            server.down = False
            await eventually(lambda: only(redis_url, {"10.1.0.1"}), timeout=30)
            await eventually(lambda: not pod.source.holding())
            assert sendings, "the deletion was reported"
            for sending in sendings:
                assert not any(sending.stale), sending
                assert all(
                    after > before for after, before in zip(sending.requests, before, strict=True)
                )
            assert all(s.answer == "ok" for s in pod.client.sent[mark:])
            assert not pod.client.wholes(mark), "the registry kept our seq: a delta suffices"


async def test_while_holding_the_leaders_own_probes_still_report(
    redis_url: str, tmp_path: Path
) -> None:
    """Its node-local probes see a pod fail during the outage: that verdict reaches the
    registry as a delta over the objects it already reported, and nothing else does."""
    port = free_port()
    svc, pods = probed_service(port)
    on_a = [p for p in pods if p.node == "node-a"]
    async with (
        listeners(port) as servers,
        k8s.apiserver(tmp_path) as server,
        registry(redis_url, lease_ttl_s=LEASE_TTL_S) as api,
    ):
        k8s.apply(server.store, svc, on_a)  # type: ignore[arg-type]
        async with k8s.k8s_agent(server, tmp_path, api, apiserver_outage_grace_s=120) as pod:

            async def all_healthy() -> bool:
                found = await verdicts(redis_url)
                return set(found) == set(NODE_A) and all(v and v[0] for v in found.values())

            await eventually(all_healthy, timeout=30)
            mark = len(pod.client.sent)
            server.down = True
            await eventually(pod.source.holding)
            servers[NODE_A[0]].close()

            async def failing() -> bool:
                found = await verdicts(redis_url)
                return found.get(NODE_A[0]) is not None and not found[NODE_A[0]][0]

            await eventually(failing, timeout=30)
            assert pod.source.holding(), "the verdict went out during the hold"
            assert pod.client.reports(mark), "as a delta"
            assert not pod.client.wholes(mark), "never a whole state while holding"
            needed = int(2 * LEASE_TTL_S / 0.5)
            await eventually(lambda: heartbeats(pod, mark) >= needed)
            assert await lease_fresh(api)
            found = await verdicts(redis_url)
            assert found[NODE_A[1]] is not None and found[NODE_A[1]][0]
            server.down = False
            await eventually(lambda: not pod.source.holding(), timeout=30)
            assert not pod.client.wholes(mark)


async def test_past_the_grace_the_leader_stands_down(redis_url: str, tmp_path: Path) -> None:
    async with (
        k8s.apiserver(tmp_path) as server,
        registry(redis_url, lease_ttl_s=LEASE_TTL_S) as api,
    ):
        k8s.apply(server.store, k8s.service("web"), [k8s.Pod("w1", "10.1.0.1")])
        async with k8s.k8s_agent(server, tmp_path, api, apiserver_outage_grace_s=2) as pod:
            await eventually(lambda: addresses(redis_url), timeout=30)
            await eventually(lambda: pod.source.reporting() and not pod.source.holding())
            mark = len(pod.client.sent)
            server.down = True
            await eventually(pod.source.holding)
            await eventually(lambda: not pod.source.reporting())
            await eventually(lambda: not pod.agent.schedule.active)
            sent = len(pod.client.sent)
            # No heartbeats any more: the registry lease runs out, the cluster leaves.
            await eventually(lambda: not_(lease_fresh(api)), timeout=30)
            assert len(pod.client.sent) == sent
            assert pod.client.reports(mark) == []
            server.down = False
            await eventually(lambda: lease_fresh(api), timeout=30)
            assert pod.client.wholes(mark), "back from standby: the whole state"


async def not_(check: Any) -> bool:
    return not await check


async def test_a_leader_cut_off_holds_until_another_takes_over_then_stops(
    redis_url: str, tmp_path: Path
) -> None:
    """Only the leader is cut off: a standby takes the Lease and reports; the old
    leader's heartbeats are refused from then on (the registry holds the new seq), it
    never reports, and once it reaches the apiserver it learns of the new holder and
    stands by at once."""
    async with (
        k8s.apiserver(tmp_path) as server,
        registry(redis_url, lease_ttl_s=LEASE_TTL_S) as api,
    ):
        k8s.apply(server.store, k8s.service("web"), [k8s.Pod("w1", "10.1.0.1")])
        async with k8s.k8s_agent(
            server, tmp_path, api, node="node-a", token="a-token", apiserver_outage_grace_s=120
        ) as a:
            await eventually(lambda: a.source.reporting() and a.agent.reports >= 1, timeout=30)
            async with k8s.k8s_agent(server, tmp_path, api, node="node-b") as b:
                await eventually(b.source.ready)
                assert not b.source.reporting()
                mark = len(a.client.sent)
                server.partition("a-token")
                await eventually(a.source.holding)
                await eventually(lambda: b.source.reporting() and b.client.wholes(), timeout=30)
                await eventually(lambda: heartbeats(a, mark, "lost") >= 1)
                after_lost = len(a.client.sent)
                assert a.client.reports(mark) == []
                server.heal("a-token")
                await eventually(lambda: not a.source.reporting(), timeout=30)
                assert a.client.reports(mark) == []
                assert all(s.kind == "heartbeat" for s in a.client.sent[mark:after_lost])
                assert a.client.sent[after_lost:] == []
                # The registry holds what b reported.
                (whole,) = b.client.wholes()[:1]
                assert whole.services and await lease_fresh(api)
                assert isinstance(b.agent.client, RegistryClient)


async def test_a_new_leader_after_an_outage_reports_only_after_its_watches_resynced(
    redis_url: str, tmp_path: Path
) -> None:
    """The leader dies during the outage; when the apiserver returns a standby takes the
    Lease, possibly before its watches are back: it reports nothing until they have all
    relisted, so a pod deleted during the outage is never reported as present."""
    pods = [k8s.Pod("w1", "10.1.0.1"), k8s.Pod("w2", "10.1.0.2")]
    async with k8s.apiserver(tmp_path) as server, registry(redis_url) as api:
        svc = k8s.service("web")
        k8s.apply(server.store, svc, pods)
        async with k8s.k8s_agent(server, tmp_path, api, node="node-a") as a:
            await eventually(lambda: a.source.reporting() and a.agent.reports >= 1, timeout=30)
            async with k8s.k8s_agent(server, tmp_path, api, node="node-b") as b:
                await eventually(b.source.ready)
                sendings = watch_reports(b)
                before = requests(b)
                server.down = True
                await eventually(a.source.holding)
                a.stop.set()  # the leader dies; it cannot release the Lease
                await a.task
                k8s.apply(server.store, svc, pods[:1])
                server.down = False
                await eventually(lambda: only(redis_url, {"10.1.0.1"}), timeout=30)
                assert b.source.reporting() and b.client.wholes()
                for sending in sendings:
                    assert not any(sending.stale), sending
                    assert all(
                        after > before
                        for after, before in zip(sending.requests, before, strict=True)
                    )
