"""Ownership: a cluster touches only what its grant covers (registry/grants.py).

The takeovers an outside tester made with one cluster's token — adding addresses to
another team's service, pulling every region's clients with ``failover: [me]`` or
``weighted {me: 10000}``, lifting a residency fence — each refused with 403 naming the
service, nothing stored; the agent learns its grant and leaves out what it does not
cover; the resolver answers only granted records, whatever Redis holds.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import dns.asyncquery
import dns.message
import dns.rcode
import pytest
import yaml

from agents.agent import Agent
from agents.reporter import RegistryClient
from agents.static import load as load_static
from registry import grants
from registry.model import Report
from registry.store import opened
from registry.topology import load
from tests.agents.recording import RecordingClient
from tests.helpers import ADMIN, TOKENS, TOPOLOGY_FILE, eventually, registry, resolver
from tests.registry.test_api import call

US, EU, AP = TOKENS["us-east-prod"], TOKENS["eu-west-prod"], TOKENS["ap-south-prod"]
ZONE = "global.example.com"


def granted_topology(tmp_path: Path) -> Path:
    """The example topology with grants as a platform team would set them: us-east owns
    production and may annotate; eu-west owns payments and team-* namespaces, no policy;
    ap-south is granted nothing."""
    document = yaml.safe_load(TOPOLOGY_FILE.read_text())
    clusters = document["clusters"]
    clusters["us-east-prod"].update(exports=["production"], policy_annotations=True)
    clusters["eu-west-prod"].update(
        exports=["payments", "team-*/*", "shared/api"], policy_annotations=False
    )
    clusters["ap-south-prod"].update(exports=[], policy_annotations=False)
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def service(
    namespace: str, name: str, address: str, policy: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "namespace": namespace,
        "name": name,
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"address": address, "conditions": {"ready": True}}],
    }
    if policy is not None:
        body["policy"] = policy
    return body


def whole(seq: int, *services: dict[str, Any]) -> dict[str, Any]:
    return {"seq": seq, "services": list(services)}


# -- the pure part ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "key", "granted"),
    [
        ("production", "production/api", True),
        ("production", "production-eu/api", False),
        ("production/api", "production/api", True),
        ("production/api", "production/web", False),
        ("team-*/*", "team-a/web", True),
        ("team-*/*", "teams/web", False),
        ("team-*", "team-b/web", True),
        ("shared/api-*", "shared/api-v2", True),
        ("shared/api-*", "shared/web", False),
        ("*", "anything/at-all", True),
    ],
)
def test_patterns(pattern: str, key: str, granted: bool) -> None:
    assert grants.Grant((grants.check_pattern(pattern),)).exported(key) is granted


@pytest.mark.parametrize("bad", ["", "Production", "a/b/c", "../x", "a b", "*/", "a/", "x" * 64])
def test_a_bad_pattern_says_what_a_pattern_is(bad: str) -> None:
    with pytest.raises(ValueError, match="is not an export pattern"):
        grants.check_pattern(bad)


def test_nothing_granted_nothing_accepted() -> None:
    assert not grants.NOTHING.exported("production/api")
    refused = grants.refusals(grants.NOTHING, [("production/api", False)])
    assert [(r.service, r.field) for r in refused] == [("production/api", "services[0]")]


def test_the_topology_carries_the_grants(tmp_path: Path) -> None:
    topology = load(granted_topology(tmp_path))
    found = topology.grants()
    assert found.exported("us-east-prod", "production/api")
    assert not found.exported("eu-west-prod", "production/api")
    assert found.exported("eu-west-prod", "team-x/web")
    assert not found.exported("ap-south-prod", "payments/api")
    assert not found.exported("nowhere", "payments/api")
    assert found.policy_annotations("us-east-prod")
    assert not found.policy_annotations("eu-west-prod")


# -- the registry refuses ---------------------------------------------------------------

TAKEOVERS = {
    "another team's service": (EU, service("production", "api", "10.9.9.9")),
    "failover to me": (
        EU,
        service("payments", "api", "10.9.9.9", {"kind": "failover", "order": ["eu-west-prod"]}),
    ),
    "all the weight to me": (
        EU,
        service(
            "payments", "api", "10.9.9.9", {"kind": "weighted", "weights": {"eu-west-prod": 10000}}
        ),
    ),
    "lift a residency fence": (EU, service("payments", "api", "10.9.9.9", {"kind": "all"})),
    "a cluster granted nothing": (AP, service("payments", "api", "10.9.9.9")),
}


@pytest.mark.parametrize("case", sorted(TAKEOVERS))
async def test_each_takeover_is_refused_naming_the_service(
    case: str, redis_url: str, tmp_path: Path
) -> None:
    token, hostile = TAKEOVERS[case]
    async with (
        registry(redis_url, topology=granted_topology(tmp_path)) as api,
        aiohttp.ClientSession() as s,
    ):
        mine = whole(1, service("production", "api", "10.0.0.1"))
        status, body = await call(s, "POST", f"{api}/v1/reports", US, mine)
        assert status == 200, body
        before = await call(s, "GET", f"{api}/v1/services")
        legit = service("payments", "web", "10.9.9.8")
        status, body = await call(s, "POST", f"{api}/v1/reports", token, whole(5, legit, hostile))
        assert status == 403, body
        key = f"{hostile['namespace']}/{hostile['name']}"
        assert key in body["error"]
        refused = {r["service"]: r["field"] for r in body["refused"]}
        assert refused[key].startswith("services[1]")
        if token == EU:  # its own service was fine; the report as a whole is refused
            assert list(refused) == [key] and body["field"] == refused[key]
        assert "exports" in body["grant"]
        # Nothing of the report was stored, not even its granted part.
        assert await call(s, "GET", f"{api}/v1/services") == before
        _, metrics = await _metrics(s, api)
        assert 'globaldns_registry_reports_refused_total{why="not granted"} 1.0' in metrics


async def _metrics(s: aiohttp.ClientSession, api: str) -> tuple[int, str]:
    async with s.get(f"{api}/metrics") as response:
        return response.status, await response.text()


async def test_the_grant_is_readable_with_the_clusters_token(
    redis_url: str, tmp_path: Path
) -> None:
    async with (
        registry(redis_url, topology=granted_topology(tmp_path)) as api,
        aiohttp.ClientSession() as s,
    ):
        status, body = await call(s, "GET", f"{api}/v1/grants", EU)
        assert status == 200
        assert body == {
            "cluster": "eu-west-prod",
            "exports": ["payments", "team-*/*", "shared/api"],
            "policy_annotations": False,
        }
        assert (await call(s, "GET", f"{api}/v1/grants"))[0] == 401


async def test_conflicting_annotations_resolve_by_name_and_show(
    redis_url: str, tmp_path: Path
) -> None:
    """Two clusters that may both annotate disagree: the first by name wins, the view
    and the resolver's metric show the conflict, and an operator override settles it."""
    path = granted_topology(tmp_path)
    document = yaml.safe_load(path.read_text())
    document["clusters"]["eu-west-prod"].update(exports=["production"], policy_annotations=True)
    path.write_text(yaml.safe_dump(document))
    mine = {"kind": "failover", "order": ["eu-west-prod"]}
    theirs = {"kind": "failover", "order": ["us-east-prod"]}
    async with (
        registry(redis_url, topology=path) as api,
        aiohttp.ClientSession() as s,
    ):
        await call(
            s,
            "POST",
            f"{api}/v1/reports",
            EU,
            whole(1, service("production", "api", "10.0.1.1", mine)),
        )
        await call(
            s,
            "POST",
            f"{api}/v1/reports",
            US,
            whole(1, service("production", "api", "10.0.0.1", theirs)),
        )
        _, svc = await call(s, "GET", f"{api}/v1/services/production/api")
        assert svc["policy"]["order"] == ["eu-west-prod"]  # eu-west-prod < us-east-prod
        assert svc["policy_conflict"] == ["us-east-prod"]
        assert "differs in us-east-prod" in svc["policy_source"]
        async with resolver(redis_url, topology=path) as bound:
            status = await _status(s, bound.http_port)
            assert status["policy_conflicts"] == 1
            text = await _resolver_metrics(s, bound.http_port)
            assert "globaldns_resolver_policy_conflicts 1.0" in text
        url = f"{api}/v1/services/production/api/policy"
        override = {"policy": {"kind": "geo"}, "by": "ops"}
        assert (await call(s, "PUT", url, ADMIN, override))[0] == 200
        _, svc = await call(s, "GET", f"{api}/v1/services/production/api")
        assert (svc["policy"]["kind"], svc["policy_source"]) == ("geo", "registry override by ops")
        assert svc["policy_conflict"] == ["us-east-prod"]  # still there, still shown


async def _status(s: aiohttp.ClientSession, port: int) -> Any:
    async with s.get(f"http://127.0.0.1:{port}/v1/status") as response:
        return await response.json()


async def _resolver_metrics(s: aiohttp.ClientSession, port: int) -> str:
    async with s.get(f"http://127.0.0.1:{port}/metrics") as response:
        return await response.text()


# -- the agent leaves out what its grant does not cover ---------------------------------


async def test_the_agent_learns_its_grant_and_reports_only_that(
    redis_url: str, tmp_path: Path
) -> None:
    source_file = tmp_path / "eu.yaml"
    static = [
        ("payments", "api", "10.0.1.1", {"kind": "failover", "order": ["eu-west-prod"]}),
        ("production", "api", "10.0.1.2", None),
        ("team-a", "web", "10.0.1.3", None),
    ]
    source_file.write_text(
        yaml.safe_dump(
            {
                "services": [
                    {
                        "namespace": ns,
                        "name": name,
                        "ports": [{"name": "http", "port": 8080}],
                        "endpoints": [{"address": address}],
                        **({"policy": policy} if policy else {}),
                    }
                    for ns, name, address, policy in static
                ]
            }
        )
    )
    async with (
        registry(redis_url, topology=granted_topology(tmp_path)) as api,
        aiohttp.ClientSession() as session,
    ):
        client = RecordingClient(RegistryClient(session, api, EU))
        agent = Agent(
            cluster="eu-west-prod",
            source=load_static(source_file),
            client=client,
            heartbeat_interval_s=0.2,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:

            async def stored() -> set[str] | None:
                async with opened(redis_url) as store:
                    state = await store.cluster("eu-west-prod")
                return {s.key for s in state.services} if state else None

            keys = await eventually(stored)
            assert keys == {"payments/api", "team-a/web"}
            async with opened(redis_url) as store:
                state = await store.cluster("eu-west-prod")
            assert state is not None
            assert {s.key: s.policy for s in state.services}["payments/api"] is None
            await eventually(lambda: agent.heartbeats >= 2)
        finally:
            stop.set()
            await task
        assert all(s.answer == "ok" for s in client.sent), client.sent


# -- the resolver answers only granted records ------------------------------------------


async def test_the_resolver_ignores_records_stored_without_a_grant(
    redis_url: str, tmp_path: Path
) -> None:
    """Written to Redis behind the registry's back (or before a grant narrowed): a
    record outside the grant is not answered, an annotation without the right is
    ignored."""
    path = granted_topology(tmp_path)
    async with opened(redis_url) as store:
        await store.write_report(
            "eu-west-prod",
            "eu-west-1",
            Report.model_validate(
                whole(
                    1,
                    service("production", "api", "10.9.9.9"),
                    service(
                        "payments", "api", "10.0.1.1", {"kind": "failover", "order": ["nowhere"]}
                    ),
                )
            ),
            max_services=100,
        )
        await store.write_report(
            "us-east-prod",
            "us-east-1",
            Report.model_validate(whole(1, service("production", "api", "10.0.0.1"))),
            max_services=100,
        )
    async with resolver(redis_url, topology=path) as bound:
        api = await _ask(bound.dns_port, f"api.production.{ZONE}")
        assert api == {"10.0.0.1"}
        payments = await _ask(bound.dns_port, f"api.payments.{ZONE}")
        assert payments == {"10.0.1.1"}  # served, by the default policy
        async with aiohttp.ClientSession() as s:
            status = await _status(s, bound.http_port)
        assert status["records_not_granted"] == 1


async def _ask(port: int, name: str) -> set[str]:
    query = dns.message.make_query(name, "A")
    reply = await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=5)
    assert reply.rcode() == dns.rcode.NOERROR
    return {rr.address for rrset in reply.answer for rr in rrset}


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"kind": "weighted", "weights": {"us-east-prod": 1, "us-east-prd": 9}}, "policy.weights"),
        ({"kind": "failover", "order": ["eu-west-prod", "mars-1"]}, "policy.order[1]"),
    ],
)
async def test_an_override_naming_an_unknown_cluster_is_refused(
    redis_url: str, policy: dict[str, Any], field: str
) -> None:
    async with registry(redis_url) as api, aiohttp.ClientSession() as s:
        url = f"{api}/v1/services/production/api/policy"
        status, body = await call(s, "PUT", url, ADMIN, {"policy": policy})
        assert status == 400 and body["field"] == field, body
        assert "us-east-prd" in body["error"] or "mars-1" in body["error"]
        ok = {"kind": "failover", "order": ["eu-west-prod", "ap-south-1"]}  # a region is fine
        assert (await call(s, "PUT", url, ADMIN, {"policy": ok}))[0] == 200
