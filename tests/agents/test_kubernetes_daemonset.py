"""The DaemonSet shape: node-sharded probes, node Leases, one reporting leader.

Two agent pods (node-a, node-b) of one cluster run against one test apiserver, the real
registry and Redis; endpoints are loopback addresses with real listeners to probe.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import kubernetes_validate

from agents.kubernetes import nodes
from globaldns.redis_server import free_port
from registry.model import Service
from registry.store import opened
from tests.agents import k8s
from tests.helpers import eventually, registry

NODE_A = ["127.70.0.1", "127.70.0.2"]
NODE_B = ["127.70.0.3", "127.70.0.4"]
NODELESS = "127.70.0.5"


async def _accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


@contextlib.asynccontextmanager
async def listeners(port: int) -> AsyncIterator[dict[str, asyncio.Server]]:
    servers = {
        a: await asyncio.start_server(_accept, a, port) for a in [*NODE_A, *NODE_B, NODELESS]
    }
    try:
        yield servers
    finally:
        for server in servers.values():
            server.close()


def probed_service(port: int) -> tuple[dict[str, object], list[k8s.Pod]]:
    svc = k8s.service(
        "web",
        annotations={
            "globaldns.io/probe": "tcp",
            "globaldns.io/probe-port": "http",
            "globaldns.io/probe-interval": "100ms",
            "globaldns.io/probe-timeout": "100ms",
            "globaldns.io/probe-rise": "1",
            "globaldns.io/probe-fall": "1",
        },
    )
    pods = [
        k8s.Pod(f"a{i}", ip, node="node-a", ports={"http": port}) for i, ip in enumerate(NODE_A)
    ]
    pods += [
        k8s.Pod(f"b{i}", ip, node="node-b", ports={"http": port}) for i, ip in enumerate(NODE_B)
    ]
    return svc, pods


def add_nodeless(server: k8s.TestApiserver, svc: dict[str, object], port: int) -> None:
    """A hand-made slice (no nodeName), as a mirroring controller would write."""
    pod = k8s.Pod("external", NODELESS, node=None, zone=None)
    server.store.put(
        "endpointslices",
        k8s.endpoint_slice(
            svc,  # type: ignore[arg-type]
            "web-external",
            endpoints=[k8s.endpoint(pod, svc)],  # type: ignore[arg-type]
            ports=[{"name": "http", "port": port, "protocol": "TCP"}],
        ),
    )


async def web(redis_url: str) -> Service | None:
    async with opened(redis_url) as store:
        state = await store.cluster("us-east-prod")
    found = {s.key: s for s in state.services} if state else {}
    return found.get("production/web")


async def verdicts(redis_url: str) -> dict[str, tuple[bool, str] | None]:
    found = await web(redis_url)
    if found is None:
        return {}
    return {
        e.address: (e.probe.healthy, e.probe.detail) if e.probe else None for e in found.endpoints
    }


def targets(pod: k8s.Running) -> set[str]:
    return {t.address for job in pod.source.probe_jobs().values() for t in job.targets}


def leadership_began(pod: k8s.Running) -> list[float]:
    """When this pod's leadership begins, on its elector's own (monotonic) clock.

    The elector announces a change right after the write that took the Lease returned;
    its ``renewed_at`` is then when that write was sent, i.e. when this pod could first
    have reported. Comparing that with another pod's elector times orders the two
    events; no elapsed time is asserted.
    """
    elector = pod.source.elector
    began: list[float] = []
    announce = elector.on_change

    def note() -> None:
        if elector.leading() and elector.renewed_at is not None:
            began.append(elector.renewed_at)
        announce()

    elector.on_change = note
    return began


def leader_holders(server: k8s.TestApiserver, since: int) -> list[str | None]:
    """The leader Lease's holder after each write from event ``since`` on, repeats merged."""
    holders: list[str | None] = []
    for event in list(server.store.log)[since:]:
        meta = event.obj["metadata"]
        if event.resource == "leases" and meta["name"] == nodes.LEADER_LEASE:
            holder = event.obj.get("spec", {}).get("holderIdentity") or None
            if not holders or holders[-1] != holder:
                holders.append(holder)
    return holders


async def test_probes_are_sharded_by_node_and_verdicts_reach_the_leader(
    redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    svc, pods = probed_service(port)
    async with (
        listeners(port) as servers,
        k8s.apiserver(tmp_path) as server,
        registry(redis_url) as api,
    ):
        k8s.apply(server.store, svc, pods)  # type: ignore[arg-type]
        add_nodeless(server, svc, port)
        async with k8s.k8s_agent(server, tmp_path, api, node="node-a") as a:
            await eventually(a.source.reporting)
            async with k8s.k8s_agent(server, tmp_path, api, node="node-b") as b:
                await eventually(lambda: b.source.ready() and targets(b))
                assert targets(a) == {*NODE_A, NODELESS}  # the leader takes the nodeless one
                assert targets(b) == set(NODE_B)
                assert not b.source.reporting()

                async def all_probed_healthy() -> bool:
                    found = await verdicts(redis_url)
                    return len(found) == 5 and all(v and v[0] for v in found.values())

                await eventually(all_probed_healthy)
                # node-b's probe sees it; node-b's Lease carries it; the leader reports it.
                servers[NODE_B[1]].close()
                servers[NODE_A[0]].close()

                async def both_failing() -> dict[str, tuple[bool, str] | None] | None:
                    found = await verdicts(redis_url)
                    bad = {a for a, v in found.items() if v and not v[0]}
                    return found if bad == {NODE_B[1], NODE_A[0]} else None

                found = await eventually(both_failing)
                assert found[NODE_B[1]] is not None and "tcp" in found[NODE_B[1]][1]
                assert b.source.node_lease.renewals >= 2


async def test_a_dead_nodes_endpoints_leave_when_its_lease_expires(
    redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    svc, pods = probed_service(port)
    async with (
        listeners(port),
        k8s.apiserver(tmp_path) as server,
        registry(redis_url) as api,
        k8s.k8s_agent(server, tmp_path, api, node="node-a") as a,
    ):
        k8s.apply(server.store, svc, pods)  # type: ignore[arg-type]
        await eventually(a.source.reporting)
        async with k8s.k8s_agent(server, tmp_path, api, node="node-b", token="node-b-token"):

            async def all_healthy() -> bool:
                found = await verdicts(redis_url)
                return len(found) == 4 and all(v and v[0] for v in found.values())

            await eventually(all_healthy)
            server.tokens.discard("node-b-token")  # node-b is cut off: no more renewals

            async def node_b_out() -> dict[str, tuple[bool, str] | None] | None:
                found = await verdicts(redis_url)
                out = all(
                    (v is not None and not v[0] and "lease expired" in v[1]) == (a in NODE_B)
                    for a, v in found.items()
                )
                return found if out else None

            # Without renewals node-b's Lease expires: exactly its endpoints leave, for
            # that reason, and node-a's (probed by a live pod) stay healthy. How soon is
            # the lease duration's business (tested on a fake clock), not this test's.
            found = await eventually(node_b_out)
            assert sorted(found) == sorted([*NODE_A, *NODE_B])
            assert all(v is not None and v[0] for a, v in found.items() if a in NODE_A), found


async def test_leader_takeover_on_silence_and_on_release(redis_url: str, tmp_path: Path) -> None:
    async with k8s.apiserver(tmp_path) as server, registry(redis_url) as api:
        k8s.apply(server.store, k8s.service("web"), [k8s.Pod("w", "10.1.0.1")])
        async with k8s.k8s_agent(server, tmp_path, api, node="node-b", token="b-token") as b:
            await eventually(b.source.reporting)
            async with k8s.k8s_agent(server, tmp_path, api, node="node-a") as a:
                a_began = leadership_began(a)
                await eventually(a.source.ready)
                await asyncio.sleep(0.5)
                assert not a.source.reporting()
                # node-b's pod is cut off from the apiserver: it cannot renew. It must
                # stop reporting before node-a may start: never two reporters at once.
                server.tokens.discard("b-token")
                await eventually(a.source.reporting)
                assert not b.source.reporting()
                # The order, on the agents' shared monotonic clock: node-b's leadership
                # ran out (its last successful renewal plus its renew deadline) before
                # node-a sent the write that took the Lease.
                b_elector = b.source.elector
                assert b_elector.renewed_at is not None
                b_stopped = b_elector.renewed_at + b_elector.deadline_s
                assert len(a_began) == 1, a_began
                assert b_stopped <= a_began[0], ("two reporters", b_stopped, a_began)
                await eventually(lambda: a.agent.reports >= 1)
                # node-b is back; node-a stops cleanly and hands over: it releases the
                # Lease, and node-b takes the released Lease (not an expired one).
                server.tokens.add("b-token")
                reports = b.agent.reports
                log_mark = len(server.store.log)
                a.stop.set()
                await a.task
                assert not a.source.reporting()
                await eventually(b.source.reporting)
                holders = leader_holders(server, log_mark)
                a_id, b_id = a.source.elector.identity, b_elector.identity
                assert holders[-2:] == [None, b_id] and set(holders[:-2]) <= {a_id}, holders
                await eventually(lambda: b.agent.reports > reports)
                assert (await web(redis_url)) is not None


async def test_a_node_lease_is_owned_by_its_pod_and_collected_with_it(
    redis_url: str, tmp_path: Path
) -> None:
    """The garbage collector deletes a node Lease with the pod that renews it; a new pod
    on the node adopts the Lease first, so a rolling update never loses it."""
    name = nodes.lease_name("node-b")
    async with (
        k8s.apiserver(tmp_path) as server,
        registry(redis_url) as api,
        k8s.k8s_agent(server, tmp_path, api, node="node-a") as a,
    ):
        k8s.apply(server.store, k8s.service("web"), [k8s.Pod("w", "10.1.0.1", node="node-b")])
        await eventually(a.source.reporting)

        def owners() -> list[dict[str, object]] | None:
            lease = server.store.objects["leases"].get(("globaldns", name))
            return None if lease is None else lease["metadata"].get("ownerReferences")

        first = {"pod": "agent-b-1", "pod_uid": "uid-b-1"}
        async with k8s.k8s_agent(server, tmp_path, api, node="node-b", **first):
            await eventually(lambda: owners() is not None)
            assert owners() == [
                {"apiVersion": "v1", "kind": "Pod", "name": "agent-b-1", "uid": "uid-b-1"}
            ]
            stored = server.store.objects["leases"][("globaldns", name)]
            body = {k: v for k, v in stored.items() if k != "status"}
            kubernetes_validate.validate(body, "1.33", strict=True)
        # A rolling update: the next pod adopts the Lease, then the old pod is deleted.
        second = {"pod": "agent-b-2", "pod_uid": "uid-b-2"}
        async with k8s.k8s_agent(server, tmp_path, api, node="node-b", **second):
            await eventually(lambda: (owners() or [{}])[0].get("uid") == "uid-b-2")
            assert server.store.owner_gone("uid-b-1") == []
            assert owners() is not None
        # The agent leaves node-b for good: its pod, then its Lease, are deleted.
        assert server.store.owner_gone("uid-b-2") == [("leases", ("globaldns", name))]
        await eventually(lambda: ("globaldns", name) not in a.source.leases.items)
        # A node without an agent is judged on its Kubernetes conditions alone.
        assert "node-b" not in a.source.peers().expired
