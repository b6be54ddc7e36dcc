"""Kubernetes agents against the test apiserver, the real registry API and Redis.

What the registry holds is read back through the registry's own store, so each test
checks the record a resolver would load.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from globaldns.redis_server import RedisProcess
from registry.model import Service
from registry.store import opened
from tests.agents import k8s
from tests.helpers import eventually, registry

CLUSTER = "us-east-prod"


async def held(redis_url: str, cluster: str = CLUSTER) -> dict[str, Service]:
    async with opened(redis_url) as store:
        state = await store.cluster(cluster)
    return {s.key: s for s in state.services} if state else {}


async def service_held(redis_url: str, key: str) -> Service | None:
    return (await held(redis_url)).get(key)


def by_address(service: Service) -> dict[str, object]:
    return {e.address: e for e in service.endpoints}


async def test_multi_slice_merge_dedupe_placeholder_and_fqdn(
    redis_url: str, tmp_path: Path
) -> None:
    async with k8s.apiserver(tmp_path) as server, registry(redis_url) as api:
        web = k8s.service("web")
        pods = [k8s.Pod(f"web-{i}", f"10.1.0.{i}") for i in range(1, 6)]
        slices = k8s.apply(server.store, web, pods, max_per_slice=2)
        assert len(slices) == 3
        # The controller moving web-5: a stale, not-ready copy in a second slice.
        stale = dict(k8s.endpoint(pods[4], web), conditions={"ready": False})
        server.store.put(
            "endpointslices",
            k8s.endpoint_slice(web, "web-moving", endpoints=[stale], ports=slices[0]["ports"]),
        )
        k8s.apply(server.store, k8s.service("idle"), [])  # the placeholder slice
        fqdn = k8s.endpoint_slice(
            k8s.service("web"),
            "web-fqdn",
            family="FQDN",
            endpoints=[{"addresses": ["db.example.com"]}],
            ports=None,
        )
        server.store.put("endpointslices", fqdn)
        async with k8s.k8s_agent(server, tmp_path, api):
            found = await eventually(lambda: service_held(redis_url, "production/web"))
            assert sorted(by_address(found)) == [f"10.1.0.{i}" for i in range(1, 6)]
            assert all(e.conditions.ready for e in found.endpoints)
            idle = await service_held(redis_url, "production/idle")
            assert idle is not None and idle.endpoints == ()


async def test_condition_table_maps_to_dns_eligibility(redis_url: str, tmp_path: Path) -> None:
    async with k8s.apiserver(tmp_path) as server, registry(redis_url) as api:
        k8s.apply(
            server.store,
            k8s.service("web"),
            [
                k8s.Pod("ready", "10.1.0.1"),
                k8s.Pod("not-ready", "10.1.0.2", ready=False),
                k8s.Pod("terminating-serving", "10.1.0.3", deleting=True),
                k8s.Pod("terminating", "10.1.0.4", ready=False, deleting=True),
            ],
        )
        k8s.apply(
            server.store,
            k8s.service("pna", publish_not_ready=True),
            [k8s.Pod("pna-1", "10.2.0.1", ready=False, deleting=True)],
        )
        async with k8s.k8s_agent(server, tmp_path, api):
            await eventually(lambda: service_held(redis_url, "production/pna"))
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{api}/v1/services/production/web") as response:
                    web = {e["address"]: e for e in (await response.json())["endpoints"]}
                async with session.get(f"{api}/v1/services/production/pna") as response:
                    pna = {e["address"]: e for e in (await response.json())["endpoints"]}
            table = {
                a: (
                    e["conditions"]["ready"],
                    e["conditions"]["serving"],
                    e["conditions"]["terminating"],
                    e["healthy"],
                )
                for a, e in {**web, **pna}.items()
            }
            assert table == {
                "10.1.0.1": (True, True, False, True),
                "10.1.0.2": (False, False, False, False),
                "10.1.0.3": (False, True, True, False),  # the resolver's fallback only
                "10.1.0.4": (False, False, True, False),
                "10.2.0.1": (True, False, True, True),  # publishNotReadyAddresses
            }


async def test_a_service_without_a_selector_is_exported_through_its_mirrored_slices(
    redis_url: str, tmp_path: Path
) -> None:
    """Its slices are mirrored from its Endpoints and carry the Endpoints object's labels,
    not the Service's export label: they are found by the service-name label."""
    async with k8s.apiserver(tmp_path) as server, registry(redis_url) as api:
        db = k8s.selectorless(k8s.service("db", ports=(("pg", 5432, 5432),)))
        server.store.put("services", db)
        external = [k8s.Pod("db-1", "192.0.2.10", node=None, zone=None)]
        server.store.put("endpointslices", k8s.mirrored_slice(db, external, {"team": "data"}))
        # The same for a Service that is not exported: watched, never reported.
        private = k8s.selectorless(k8s.service("private", export=False))
        server.store.put("services", private)
        hidden = [k8s.Pod("p-1", "192.0.2.20", node=None, zone=None)]
        server.store.put("endpointslices", k8s.mirrored_slice(private, hidden, {}))
        k8s.apply(server.store, k8s.service("web"), [k8s.Pod("web-1", "10.1.0.1")])
        async with k8s.k8s_agent(server, tmp_path, api) as pod:
            found = await eventually(lambda: service_held(redis_url, "production/db"))
            assert [(e.address, e.conditions.ready) for e in found.endpoints] == [
                ("192.0.2.10", True)
            ]
            assert [(p.name, p.port) for p in found.ports] == [("pg", 5432)]
            # The Endpoints object changes: the mirrored slice follows, and so does DNS.
            more = [*external, k8s.Pod("db-2", "192.0.2.11", node=None, zone=None)]
            server.store.put("endpointslices", k8s.mirrored_slice(db, more, {"team": "data"}))

            async def both() -> bool:
                held_db = await service_held(redis_url, "production/db")
                return held_db is not None and len(held_db.endpoints) == 2

            await eventually(both)
            assert set(await held(redis_url)) == {"production/db", "production/web"}
            # The controller's slices come through the export label alone.
            assert pod.source.other_slices.items.keys() == {
                ("production", "db-mirrored"),
                ("production", "private-mirrored"),
            }


async def test_dual_stack_and_ports_resolved_per_slice(redis_url: str, tmp_path: Path) -> None:
    async with k8s.apiserver(tmp_path) as server, registry(redis_url) as api:
        svc = k8s.service(
            "web",
            families=("IPv4", "IPv6"),
            ports=(("http", 80, "http"), ("metrics", 9100, 9100)),
        )
        pods = [
            k8s.Pod("old", "10.1.0.1", "fd00::1", ports={"http": 8080}),
            k8s.Pod("new", "10.1.0.2", "fd00::2", ports={"http": 8081}),
        ]
        slices = k8s.apply(server.store, svc, pods)
        assert len(slices) == 4  # two families x two resolutions of the named port
        async with k8s.k8s_agent(server, tmp_path, api):
            found = await eventually(lambda: service_held(redis_url, "production/web"))
            assert {(e.address, e.family) for e in found.endpoints} == {
                ("10.1.0.1", 4),
                ("10.1.0.2", 4),
                ("fd00::1", 6),
                ("fd00::2", 6),
            }
            # The port both slices agree on is the service's; "http" is per endpoint.
            assert [(p.name, p.port) for p in found.ports] == [("metrics", 9100)]
            http = {
                e.address: {p.name: p.port for p in e.ports or ()}["http"] for e in found.endpoints
            }
            assert http == {"10.1.0.1": 8080, "fd00::1": 8080, "10.1.0.2": 8081, "fd00::2": 8081}


async def test_invalid_annotations_are_reported_and_ignored(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with k8s.apiserver(tmp_path) as server, registry(redis_url) as api:
        good = {
            "globaldns.io/ttl": "7",
            "globaldns.io/policy": "failover",
            "globaldns.io/failover-order": "eu-west-prod,us-east-prod",
        }
        bad = {**good, "globaldns.io/probe-rise": "often", "globaldns.io/tll": "9"}
        k8s.apply(server.store, k8s.service("good", annotations=good), [k8s.Pod("g", "10.1.0.1")])
        k8s.apply(server.store, k8s.service("bad", annotations=bad), [k8s.Pod("b", "10.1.0.2")])
        async with k8s.k8s_agent(server, tmp_path, api) as pod:
            found = await eventually(lambda: held(redis_url))
            assert found["production/good"].ttl == 7
            policy = found["production/good"].policy
            assert policy is not None and policy.order == ("eu-west-prod", "us-east-prod")
            # Never half-read: none of the bad Service's settings applies.
            assert found["production/bad"].ttl is None and found["production/bad"].policy is None
            assert [e.address for e in found["production/bad"].endpoints] == ["10.1.0.2"]
            assert pod.source.annotation_problems == 1
            out = capsys.readouterr().out
            assert "invalid globaldns.io annotations" in out
            assert "globaldns.io/tll" in out and "globaldns.io/probe-* set without" in out


async def test_loadbalancer_mode_follows_ready_endpoints(redis_url: str, tmp_path: Path) -> None:
    async with k8s.apiserver(tmp_path) as server, registry(redis_url) as api:
        svc = k8s.service(
            "edge",
            type="LoadBalancer",
            ingress=["203.0.113.10"],
            annotations={"globaldns.io/min-ready-endpoints": "2"},
        )
        pods = [k8s.Pod("e1", "10.1.0.1"), k8s.Pod("e2", "10.1.0.2")]
        k8s.apply(server.store, svc, pods)
        async with k8s.k8s_agent(server, tmp_path, api):
            found = await eventually(lambda: service_held(redis_url, "production/edge"))
            assert [(e.address, e.conditions.ready) for e in found.endpoints] == [
                ("203.0.113.10", True)
            ]
            assert [(p.name, p.port) for p in found.ports] == [("http", 80)]
            pods[1].ready = False
            k8s.apply(server.store, svc, pods)

            async def not_ready() -> bool:
                edge = await service_held(redis_url, "production/edge")
                return edge is not None and edge.endpoints[0].conditions.ready is False

            await eventually(not_ready)


async def test_a_burst_is_coalesced_into_a_few_reports(redis_url: str, tmp_path: Path) -> None:
    """A rolling update of 100 pods (100 slice writes) reaches the registry whole, in a
    handful of reports. Only counts are asserted: how soon is for the schedule's
    fake-clock tests (tests/agents/test_schedule.py)."""
    async with k8s.apiserver(tmp_path) as server, registry(redis_url) as api:
        svc = k8s.service("web")
        pods = [k8s.Pod(f"web-{i}", f"10.1.{i // 200}.{i % 200 + 1}") for i in range(100)]
        k8s.apply(server.store, svc, pods)
        async with k8s.k8s_agent(server, tmp_path, api) as pod:
            await eventually(lambda: service_held(redis_url, "production/web"))
            await asyncio.sleep(0.3)
            before = pod.agent.reports
            # A rolling update: every pod replaced, one slice write per step.
            for i in range(100):
                pods[i] = k8s.Pod(f"web-v2-{i}", f"10.2.{i // 200}.{i % 200 + 1}")
                k8s.apply(server.store, svc, pods)
                await asyncio.sleep(0)

            async def all_new() -> bool:
                found = await service_held(redis_url, "production/web")
                return found is not None and all(
                    e.address.startswith("10.2.") for e in found.endpoints
                )

            await eventually(all_new, interval=0.005)
            found = await service_held(redis_url, "production/web")
            assert found is not None
            assert sorted(e.address for e in found.endpoints) == sorted(p.ip for p in pods)
            # Typically 6 reports (7 with both cores busy): the count follows the
            # registry's round trips, which a slow machine stretches as much as the
            # burst. The bound leaves room for that and still says "coalesced".
            reports = pod.agent.reports - before
            assert 1 <= reports <= 20, reports


async def test_a_watch_reconnect_compares_everything_and_sends_only_what_differs(
    redis_url: str, tmp_path: Path
) -> None:
    async with k8s.apiserver(tmp_path) as server, registry(redis_url) as api:
        svc = k8s.service("web")
        k8s.apply(server.store, svc, [k8s.Pod("w", "10.1.0.1")])
        k8s.apply(server.store, k8s.service("db"), [k8s.Pod("d", "10.1.1.1")])
        async with k8s.k8s_agent(server, tmp_path, api) as pod:
            await eventually(lambda: service_held(redis_url, "production/web"))
            await eventually(lambda: server.open_watches == len(pod.source.informers))
            unchanged, sent = pod.agent.unchanged, len(pod.client.sent)
            reports = len(pod.client.reports())
            watches = len(server.watches())
            server.drop_watches()
            # Back after an error, the informers say "anything may have changed": the
            # agent builds every service, finds nothing new, and sends nothing.
            await eventually(lambda: pod.agent.unchanged > unchanged)
            assert len(pod.client.reports()) == reports
            # What changes is sent as a delta naming that service alone.
            await eventually(lambda: len(server.watches()) >= watches + len(pod.source.informers))
            k8s.apply(server.store, svc, [k8s.Pod("w", "10.1.0.1"), k8s.Pod("w2", "10.1.0.2")])
            await eventually(lambda: pod.client.deltas(sent))
            assert all(s.answer == "ok" for s in pod.client.reports(sent))
            (report,) = pod.client.deltas(sent)
            assert [s.key for s in report.services] == ["production/web"]
            assert report.removed == () and not pod.client.wholes(sent)


async def test_nothing_is_lost_while_the_registry_is_unreachable(
    own_redis: RedisProcess, tmp_path: Path
) -> None:
    async with k8s.apiserver(tmp_path) as server, registry(own_redis.url) as api:
        svc = k8s.service("web")
        pods = [k8s.Pod("w1", "10.1.0.1"), k8s.Pod("w2", "10.1.0.2")]
        k8s.apply(server.store, svc, pods)
        async with k8s.k8s_agent(server, tmp_path, api):
            await eventually(lambda: service_held(own_redis.url, "production/web"))
            own_redis.kill()  # the registry answers 503 to every report meanwhile
            pods[0].ready = False
            pods.append(k8s.Pod("w3", "10.1.0.3"))
            k8s.apply(server.store, svc, pods)
            await asyncio.sleep(1.0)
            own_redis.start()

            async def caught_up() -> Service | None:
                found = await service_held(own_redis.url, "production/web")
                if found is None or len(found.endpoints) != 3:
                    return None
                return found

            found = await eventually(caught_up)
            assert {e.address: e.conditions.ready for e in found.endpoints} == {
                "10.1.0.1": False,
                "10.1.0.2": True,
                "10.1.0.3": True,
            }
