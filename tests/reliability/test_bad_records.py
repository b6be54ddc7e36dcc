"""One bad value in Redis costs its own record: never the resolver's sync, never a 500.

Each case writes garbage into one key of the schema (``registry/keys.py``) — a value of
the wrong kind, a name that is no name, JSON that is not the model, a key of another
Redis type — under a running registry and resolver fed three clusters, and checks what
clients and operators see while it is there: the other clusters' names keep being
answered over real sockets, by the running resolver and by one started meanwhile; a
change made meanwhile is followed; the bad record is counted by the kind of its key and
logged once, without a traceback; the registry's GET routes answer 200 and name it.
Once the value is put back, a change and a drain made afterwards are both answered.

The garbage goes into ``us-east-prod``'s keys where a key is per cluster, so the names
checked meanwhile are the other two clusters' (a fresh resolver cannot know what a
garbled us-east record held; the running one keeps what it held).
"""

from __future__ import annotations

import inspect
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import structlog
from prometheus_client.parser import text_string_to_metric_families

from globaldns import show
from registry import keys
from resolver.main import Bound
from tests.helpers import TOKENS, addresses, aquery, eventually, ready, registry, resolver
from tests.reliability.world import ADMIN_HEADERS, CLIENT, PREFIX, WEB, goes_to
from tests.reliability.world import NAME as API

US, EU, AP = CLIENT["us-east-prod"], CLIENT["eu-west-prod"], CLIENT["ap-south-prod"]
SPOILED = "us-east-prod"
"""The cluster whose per-cluster keys get the garbage."""
GOOD = [(EU, "eu-west-prod"), (AP, "ap-south-prod")]
"""Clients whose names must keep their answers whatever happens to us-east's keys."""
LONG_LEASE: dict[str, Any] = {"lease_ttl_s": 3600}
"""No agent renews leases here: the only thing that changes is what the test writes."""

Spoil = Callable[[aioredis.Redis], Awaitable[Any]]
GETS = ("/v1/clusters", "/v1/services", "/v1/services/production/web", "/v1/drains")


@dataclass(frozen=True)
class Garbage:
    id: str
    key: str
    spoil: Spoil
    resolver_reads: bool = True
    """Counted by a resolver (running, or started while it is there); else only the
    registry reads the key, and counts it."""
    shown: bool = True
    """Read by the registry's GET routes, which list it in ``problems``."""
    writes: bool = True
    """Reports are still stored while it is there (else the registry cannot write them:
    it writes that key too)."""
    decides: bool = True
    """Drains are still made while it is there (else the registry cannot make them: the
    decision script writes that key too)."""
    again: bool = False
    """Written again until counted: the registry rewrites that key by itself."""


def hset(key: str, field: str, value: str) -> Spoil:
    return lambda r: r.hset(key, field, value)


def replaced(key: str, kind: str) -> Spoil:
    """The key, holding another Redis type than the schema's."""

    async def spoil(r: aioredis.Redis) -> None:
        async with r.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if kind == "string":
                pipe.set(key, "garbage")
            else:
                pipe.hset(key, "garbage", "1")
            await pipe.execute()

    return spoil


def record(namespace: str, name: str, address: str = "10.1.0.1") -> str:
    return json.dumps({"namespace": namespace, "name": name, "endpoints": [{"address": address}]})


C = SPOILED
CASES = [
    Garbage(
        "gen-not-an-integer",
        keys.GENERATION,
        lambda r: r.set(keys.GENERATION, "x"),
        writes=False,
        decides=False,
    ),
    Garbage(
        "gen-a-hash",
        keys.GENERATION,
        replaced(keys.GENERATION, "hash"),
        writes=False,
        decides=False,
    ),
    Garbage(
        "chg-an-entry-about-no-cluster",
        keys.CHANGES,
        lambda r: r.xadd(
            keys.CHANGES,
            {"cluster": "Not A Cluster", "kind": "services", "keys": "x/../y", "obs": "²"},
        ),
        shown=False,
    ),
    Garbage(
        "chg-bad-keys-and-obs",
        keys.CHANGES,
        lambda r: r.xadd(
            keys.CHANGES,
            {"cluster": C, "kind": "services", "keys": "BAD,production/api", "obs": "soon"},
        ),
        shown=False,
    ),
    Garbage(
        "chg-a-string",
        keys.CHANGES,
        replaced(keys.CHANGES, "string"),
        writes=False,
        decides=False,
    ),
    Garbage("clusters-a-bad-name", keys.CLUSTERS, lambda r: r.sadd(keys.CLUSTERS, "Not_A_Name")),
    Garbage("clusters-a-string", keys.CLUSTERS, replaced(keys.CLUSTERS, "string"), writes=False),
    Garbage("cluster-region", keys.cluster(C), hset(keys.cluster(C), "region", "Not A Region")),
    Garbage("cluster-seq", keys.cluster(C), hset(keys.cluster(C), "seq", "1.5e3")),
    Garbage("cluster-lease", keys.cluster(C), hset(keys.cluster(C), "last_seen_ms", "yesterday")),
    Garbage("cluster-total", keys.cluster(C), hset(keys.cluster(C), "total", "not-hex")),
    Garbage("cluster-a-string", keys.cluster(C), replaced(keys.cluster(C), "string")),
    Garbage("services-not-json", keys.services(C), hset(keys.services(C), "production/api", "{")),
    Garbage(
        "services-not-the-model",
        keys.services(C),
        hset(keys.services(C), "production/api", record("production", "api", "not-an-ip")),
    ),
    Garbage(
        "services-another-service",
        keys.services(C),
        hset(keys.services(C), "production/api", record("production", "web")),
    ),
    Garbage(
        "services-a-bad-field",
        keys.services(C),
        hset(keys.services(C), "Not/A Key", record("production", "api")),
        resolver_reads=False,  # resolvers find records through the digests
    ),
    Garbage("services-a-string", keys.services(C), replaced(keys.services(C), "string")),
    Garbage(
        "digests-not-hex",
        keys.digests(C),
        hset(keys.digests(C), "production/api", "zz"),
        shown=False,
    ),
    Garbage("digests-a-string", keys.digests(C), replaced(keys.digests(C), "string"), shown=False),
    Garbage("drains-not-json", keys.DRAINS, hset(keys.DRAINS, C, "{")),
    Garbage("drains-a-bad-field", keys.DRAINS, hset(keys.DRAINS, "Not A Cluster", "{}")),
    Garbage("drains-a-string", keys.DRAINS, replaced(keys.DRAINS, "string"), decides=False),
    Garbage("policies-not-json", keys.POLICIES, hset(keys.POLICIES, "production/web", "[1]")),
    Garbage(
        "policies-a-bad-field",
        keys.POLICIES,
        hset(keys.POLICIES, "web", json.dumps({"policy": {"kind": "all"}})),
    ),
    Garbage("policies-a-string", keys.POLICIES, replaced(keys.POLICIES, "string")),
    Garbage(
        "decisions-not-an-integer",
        keys.DECISIONS,
        hset(keys.DECISIONS, "policy:production/web", "latest"),
        shown=False,
    ),
    Garbage(
        "decisions-a-string",
        keys.DECISIONS,
        replaced(keys.DECISIONS, "string"),
        shown=False,
        decides=False,
    ),
    Garbage(
        "decisions-rev-not-an-integer",
        keys.DECISIONS_REV,
        lambda r: r.set(keys.DECISIONS_REV, "x"),
        resolver_reads=False,
        shown=False,
    ),
    Garbage(
        "decisions-rev-a-hash",
        keys.DECISIONS_REV,
        replaced(keys.DECISIONS_REV, "hash"),
        resolver_reads=False,
        shown=False,
        decides=False,
    ),
    Garbage(
        "registry-not-an-integer",
        keys.REGISTRY,
        hset(keys.REGISTRY, "alive_ms", "now"),
        shown=False,
        again=True,  # the registry's beacon, every second
    ),
    Garbage("registry-a-string", keys.REGISTRY, replaced(keys.REGISTRY, "string"), shown=False),
]


def defined_patterns() -> set[str]:
    """Every key registry/keys.py defines: its constants, and what its key functions
    build (with ``<c>`` for the cluster)."""
    found = {
        value
        for name, value in vars(keys).items()
        if name.isupper() and isinstance(value, str) and value.startswith(keys.PREFIX)
    }
    found.discard(keys.PREFIX)
    for _name, function in inspect.getmembers(keys, inspect.isfunction):
        if function.__module__ == keys.__name__ and function is not keys.pattern:
            found.add(function("<c>"))
    return found


def test_every_key_of_the_schema_has_garbage_here() -> None:
    """A key added to registry/keys.py without a case here fails this test."""
    assert defined_patterns() == set(keys.PATTERNS)
    assert {keys.pattern(case.key) for case in CASES} == set(keys.PATTERNS)
    for pattern in keys.PATTERNS:
        ids = [case.id for case in CASES if keys.pattern(case.key) == pattern]
        wrong_type = [i for i in ids if i.endswith(("-a-string", "-a-hash"))]
        assert wrong_type and len(ids) > len(wrong_type), f"{pattern}: {ids}"


def body(cluster: str, seq: int, *extra: int) -> dict[str, Any]:
    endpoints = [{"address": f"{PREFIX[cluster]}.{i}"} for i in (1, 2, *extra)]
    services = [
        {"namespace": "production", "name": name, "endpoints": endpoints} for name in ("api", "web")
    ]
    return {"seq": seq, "services": services}


async def report(s: aiohttp.ClientSession, api: str, cluster: str, seq: int, *extra: int) -> None:
    headers = {"Authorization": f"Bearer {TOKENS[cluster]}"}
    async with s.post(f"{api}/v1/reports", json=body(cluster, seq, *extra), headers=headers) as r:
        assert r.status == 200, await r.text()


async def admin(s: aiohttp.ClientSession, method: str, url: str, data: Any = None) -> None:
    async with s.request(method, url, json=data, headers=ADMIN_HEADERS) as r:
        assert r.status == 200, await r.text()


async def bad_records(s: aiohttp.ClientSession, base: str, pattern: str) -> float:
    """What a process's /metrics says it skipped for keys of ``pattern``."""
    async with s.get(f"{base}/metrics") as r:
        text = await r.text()
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_bad_records"):
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels["key"] == pattern:
                    return sample.value
    raise AssertionError(f"no bad-record counter for {pattern} at {base}")


async def answers_good_names(port: int) -> bool:
    for client, cluster in GOOD:
        for name in (API, WEB):
            if not await goes_to(port, client, cluster, name=name):
                return False
    return True


async def gives(port: int, client: str, address: str) -> bool:
    return address in addresses(await aquery(port, API, source=client))


async def avoids(port: int, client: str, cluster: str) -> bool:
    answer = addresses(await aquery(port, API, source=client))
    return bool(answer) and not any(a.startswith(PREFIX[cluster] + ".") for a in answer)


def http(port: int) -> str:
    return f"http://127.0.0.1:{port}"


@pytest.fixture
async def world(redis_url: str) -> AsyncIterator[tuple[aiohttp.ClientSession, str, Bound]]:
    """A registry and a resolver reading three clusters, a drain made and cleared and a
    policy override set (so that every key of the schema exists)."""
    async with (
        registry(redis_url, **LONG_LEASE) as api,
        resolver(redis_url, resync_interval_s=0.3, **LONG_LEASE) as bound,
        aiohttp.ClientSession() as s,
    ):
        for cluster in PREFIX:
            await report(s, api, cluster, 10)
        await admin(s, "POST", f"{api}/v1/clusters/ap-south-prod/drain", {"force": True})
        await admin(s, "DELETE", f"{api}/v1/clusters/ap-south-prod/drain")
        override = {"policy": {"kind": "geo"}, "reason": "the default, made explicit"}
        await admin(s, "PUT", f"{api}/v1/services/production/web/policy", override)
        await eventually(lambda: answers_good_names(bound.dns_port))
        await eventually(lambda: goes_to(bound.dns_port, US, SPOILED))
        yield s, api, bound


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_garbage_costs_its_own_record(
    case: Garbage, redis_url: str, world: tuple[aiohttp.ClientSession, str, Bound]
) -> None:
    s, api, bound = world
    pattern = keys.pattern(case.key)
    r = aioredis.Redis.from_url(redis_url)
    try:
        saved = {k: dump for k in await r.keys(f"{keys.PREFIX}*") if (dump := await r.dump(k))}
        with structlog.testing.capture_logs() as logs:
            await case.spoil(r)
            async with resolver(redis_url, wait_for_sync=False, **LONG_LEASE) as fresh:
                readers = [http(bound.http_port), http(fresh.http_port)]
                if not case.resolver_reads:
                    readers = [api]  # its GET routes, or its upkeep (decisions:rev)

                async def counted() -> bool:
                    if case.again:
                        await case.spoil(r)
                    if not case.resolver_reads:
                        async with s.get(f"{api}/v1/services") as got:
                            assert got.status == 200
                    return any([await bad_records(s, base, pattern) > 0 for base in readers])

                await eventually(counted)
                # The running resolver and one started meanwhile answer the others' names.
                assert await answers_good_names(bound.dns_port)
                await eventually(lambda: ready(fresh.http_port))
                assert await answers_good_names(fresh.dns_port)
                assert await ready(bound.http_port)
                if case.writes:
                    # ... and the running one still follows what changes,
                    await report(s, api, "ap-south-prod", 11, 7)
                    await eventually(lambda: gives(bound.dns_port, AP, "10.3.0.7"))
                if case.decides:
                    # ... and what operators decide.
                    drain = f"{api}/v1/clusters/ap-south-prod/drain"
                    await admin(s, "POST", drain, {"force": True})
                    await eventually(lambda: avoids(bound.dns_port, AP, "ap-south-prod"))
                    await admin(s, "DELETE", drain)
                    await eventually(lambda: goes_to(bound.dns_port, AP, "ap-south-prod"))
                problems, bodies = [], {}
                for path in GETS:
                    async with s.get(api + path) as got:
                        assert got.status == 200, (path, got.status, await got.text())
                        bodies[path] = await got.json()
                        problems += bodies[path]["problems"]
                if case.shown:
                    assert pattern in {p["kind"] for p in problems}, problems
                    # `globaldns status` says so too.
                    text = show.status(
                        *(bodies[f"/v1/{p}"] for p in ("clusters", "drains", "services"))
                    )
                    assert "Unreadable in Redis" in text and case.key in text
        said = Counter(
            (e["event"], e["key"], e["field"], e["why"])
            for e in logs
            if e["event"].startswith("unreadable record in Redis skipped")
        )
        assert said, "the bad record was not logged"
        # Once by each reader that met it (two resolvers, one registry), not per read.
        assert all(n <= (1 if line[0].endswith("registry") else 2) for line, n in said.items())
        loud = [e for e in logs if e["log_level"] in ("error", "critical") or "exc_info" in e]
        assert loud == []

        # The value is put back: a change and a drain made now are both answered.
        for key in await r.keys(f"{keys.PREFIX}*"):
            if key not in saved:
                await r.delete(key)
        for key, value in saved.items():
            await r.restore(key, 0, value, replace=True)
        await report(s, api, SPOILED, 12, 9)
        await admin(s, "POST", f"{api}/v1/clusters/eu-west-prod/drain", {"force": True})
        await eventually(lambda: gives(bound.dns_port, US, "10.1.0.9"))
        await eventually(lambda: avoids(bound.dns_port, EU, "eu-west-prod"))
        assert await ready(bound.http_port)
    finally:
        await r.aclose()
