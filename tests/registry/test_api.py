"""The registry API against a real Redis: who may write what, and what it shows."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from globaldns.redis_server import RedisProcess
from tests.helpers import ADMIN, TOKENS, registry

US, EU = TOKENS["us-east-prod"], TOKENS["eu-west-prod"]


def report(seq: int = 1, *addresses: str, ready: bool = True) -> dict[str, Any]:
    return {
        "seq": seq,
        "services": [
            {
                "namespace": "production",
                "name": "api",
                "ports": [{"name": "http", "port": 8080}],
                "endpoints": [
                    {"address": a, "node": "n1", "conditions": {"ready": ready}}
                    for a in (addresses or ("10.0.0.1",))
                ],
            }
        ],
    }


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    token: str | None = None,
    body: Any = None,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.request(method, url, json=body, headers=headers) as response:
        return response.status, await response.json()


async def test_report_then_inspect(redis_url: str) -> None:
    async with registry(redis_url) as api, aiohttp.ClientSession() as s:
        status, body = await call(s, "POST", f"{api}/v1/reports", US, report(1, "10.0.0.1"))
        assert status == 200 and body["cluster"] == "us-east-prod"
        status, body = await call(s, "POST", f"{api}/v1/reports", EU, report(1, "10.0.1.1"))
        assert status == 200

        status, svc = await call(s, "GET", f"{api}/v1/services/production/api")
        assert status == 200
        assert sorted(
            (e["cluster"], e["region"], e["address"], e["healthy"]) for e in svc["endpoints"]
        ) == [
            ("eu-west-prod", "eu-west-1", "10.0.1.1", True),
            ("us-east-prod", "us-east-1", "10.0.0.1", True),
        ]
        status, listing = await call(s, "GET", f"{api}/v1/services")
        assert [x["name"] for x in listing["services"]] == ["api"]

        status, clusters = await call(s, "GET", f"{api}/v1/clusters")
        by_name = {c["name"]: c for c in clusters["clusters"]}
        assert by_name["us-east-prod"]["state"] == "active"
        assert by_name["us-east-prod"]["lease_fresh"] is True
        assert by_name["us-east-prod"]["endpoints"] == {"total": 1, "healthy": 1}
        assert by_name["ap-south-prod"]["state"] == "never-reported"

        assert (await call(s, "GET", f"{api}/v1/services/production/nope"))[0] == 404


async def test_not_ready_endpoints_show_why(redis_url: str) -> None:
    async with registry(redis_url) as api, aiohttp.ClientSession() as s:
        await call(s, "POST", f"{api}/v1/reports", US, report(1, "10.0.0.1", ready=False))
        _, svc = await call(s, "GET", f"{api}/v1/services/production/api")
        [endpoint] = svc["endpoints"]
        assert endpoint["healthy"] is False and endpoint["reasons"] == ["not ready"]


async def test_the_token_decides_the_cluster(redis_url: str) -> None:
    async with registry(redis_url) as api, aiohttp.ClientSession() as s:
        assert (await call(s, "POST", f"{api}/v1/reports", None, report()))[0] == 401
        assert (await call(s, "POST", f"{api}/v1/reports", "wrong" * 5, report()))[0] == 401
        status, body = await call(
            s, "POST", f"{api}/v1/reports", US, {**report(), "cluster": "eu-west-prod"}
        )
        assert status == 403 and "not for eu-west-prod" in body["error"]
        _, listing = await call(s, "GET", f"{api}/v1/services")
        assert listing["services"] == []


async def test_invalid_payloads_say_which_field_and_why(redis_url: str) -> None:
    async with registry(redis_url) as api, aiohttp.ClientSession() as s:
        bad = report(1, "10.0.0.999")
        status, body = await call(s, "POST", f"{api}/v1/reports", US, bad)
        assert status == 400
        assert body["problems"][0]["field"] == "services.0.endpoints.0.address"
        assert "not an IPv4 or IPv6 address" in body["problems"][0]["why"]
        async with s.post(
            f"{api}/v1/reports", data=b"{nope", headers={"Authorization": f"Bearer {US}"}
        ) as response:
            assert response.status == 400
            assert "not JSON" in (await response.json())["error"]


async def test_older_reports_never_overwrite_newer(redis_url: str) -> None:
    async with registry(redis_url) as api, aiohttp.ClientSession() as s:
        assert (await call(s, "POST", f"{api}/v1/reports", US, report(10, "10.0.0.1")))[0] == 200
        status, body = await call(s, "POST", f"{api}/v1/reports", US, report(9, "10.0.0.9"))
        assert status == 409 and body["stored_seq"] == 10
        _, svc = await call(s, "GET", f"{api}/v1/services/production/api")
        assert [e["address"] for e in svc["endpoints"]] == ["10.0.0.1"]


async def test_heartbeats_ask_for_the_whole_state_when_it_is_lost(
    own_redis: RedisProcess,
) -> None:
    async with registry(own_redis.url) as api, aiohttp.ClientSession() as s:
        assert (await call(s, "POST", f"{api}/v1/reports", US, report(5)))[0] == 200
        assert (await call(s, "POST", f"{api}/v1/heartbeats", US, {"seq": 5}))[0] == 200
        assert (await call(s, "POST", f"{api}/v1/heartbeats", US, {"seq": 4}))[0] == 409
        own_redis.kill()
        status, body = await call(s, "POST", f"{api}/v1/heartbeats", US, {"seq": 5})
        assert status == 503 and "retry" in body["error"]
        assert (await call(s, "GET", f"{api}/readyz"))[0] == 503
        assert (await call(s, "GET", f"{api}/healthz"))[0] == 200
        own_redis.start()  # a new, empty server on the same port
        status, body = await call(s, "POST", f"{api}/v1/heartbeats", US, {"seq": 5})
        assert status == 409 and body["resync"] is True
        assert (await call(s, "GET", f"{api}/readyz"))[0] == 200


async def test_drain_needs_the_admin_token(redis_url: str) -> None:
    async with registry(redis_url) as api, aiohttp.ClientSession() as s:
        await call(s, "POST", f"{api}/v1/reports", US, report())
        await call(s, "POST", f"{api}/v1/reports", EU, report(1, "10.0.1.1"))
        url = f"{api}/v1/clusters/us-east-prod/drain"
        assert (await call(s, "POST", url, None, {}))[0] == 401
        assert (await call(s, "POST", url, US, {}))[0] == 401
        assert (await call(s, "POST", f"{api}/v1/clusters/mars/drain", ADMIN, {}))[0] == 404
        status, _ = await call(s, "POST", url, ADMIN, {"reason": "kernel upgrade", "by": "ops"})
        assert status == 200
        _, clusters = await call(s, "GET", f"{api}/v1/clusters")
        us = next(c for c in clusters["clusters"] if c["name"] == "us-east-prod")
        assert us["state"] == "draining" and us["drain"]["reason"] == "kernel upgrade"
        assert us["endpoints"]["healthy"] == 0
        _, svc = await call(s, "GET", f"{api}/v1/services/production/api")
        us_endpoint = next(e for e in svc["endpoints"] if e["cluster"] == "us-east-prod")
        assert us_endpoint["reasons"] == ["cluster drained: kernel upgrade"]
        # A new report does not clear a drain.
        await call(s, "POST", f"{api}/v1/reports", US, report(2))
        _, clusters = await call(s, "GET", f"{api}/v1/clusters")
        assert next(c for c in clusters["clusters"] if c["name"] == "us-east-prod")["drain"]
        status, body = await call(s, "DELETE", url, ADMIN)
        assert status == 200 and body["was_drained"] is True
        _, svc = await call(s, "GET", f"{api}/v1/services/production/api")
        assert all(e["healthy"] for e in svc["endpoints"])


@pytest.mark.parametrize("tokens", [{"mars-prod": "x" * 20}, {"us-east-prod": "short"}])
async def test_bad_token_configuration_is_refused(redis_url: str, tokens: dict[str, str]) -> None:
    from pydantic import SecretStr

    from registry.errors import ConfigError
    from registry.server import check
    from registry.settings import RegistrySettings
    from tests.helpers import TOPOLOGY_FILE, topology

    settings = RegistrySettings(
        topology=TOPOLOGY_FILE, cluster_tokens={k: SecretStr(v) for k, v in tokens.items()}
    )
    with pytest.raises(ConfigError, match="GLOBALDNS_CLUSTER_TOKENS"):
        check(settings, topology())


async def test_metrics_count_reports_and_requests(redis_url: str) -> None:
    async with registry(redis_url) as api, aiohttp.ClientSession() as s:
        await call(s, "POST", f"{api}/v1/reports", US, report())
        await call(s, "POST", f"{api}/v1/reports", None, report())
        async with s.get(f"{api}/metrics") as response:
            text = await response.text()
    assert 'globaldns_registry_reports_total{cluster="us-east-prod",kind="whole"} 1.0' in text
    assert 'globaldns_registry_requests_total{route="/v1/reports",status="401"} 1.0' in text


async def test_safe_drains(redis_url: str) -> None:
    async with registry(redis_url) as api, aiohttp.ClientSession() as s:
        await call(s, "POST", f"{api}/v1/reports", US, report(1, "10.0.0.1"))
        await call(s, "POST", f"{api}/v1/reports", EU, report(1, "10.0.1.1"))
        eu = f"{api}/v1/clusters/eu-west-prod/drain"
        # A dry run says what would happen and changes nothing.
        status, body = await call(s, "POST", eu, ADMIN, {"dry_run": True, "reason": "x"})
        assert status == 200 and body["dry_run"] is True
        [impact] = body["impact"]
        assert impact == {
            "service": "production/api",
            "loses": ["eu-west-prod"],
            "remaining": ["us-east-prod"],
            "clients_go_to": {"eu-west-1": "us-east-1"},
            "stranded": False,
        }
        assert (await call(s, "GET", f"{api}/v1/drains"))[1]["drains"] == []
        # Draining the other one too would strand the service: refused unless forced.
        status, _ = await call(s, "POST", eu, ADMIN, {"reason": "upgrade", "by": "ops"})
        assert status == 200
        us = f"{api}/v1/clusters/us-east-prod/drain"
        status, body = await call(s, "POST", us, ADMIN, {"reason": "upgrade"})
        assert status == 409 and "production/api" in body["error"]
        assert body["impact"][0]["stranded"] is True
        status, _ = await call(s, "POST", us, ADMIN, {"reason": "upgrade", "force": True})
        assert status == 200
        _, listed = await call(s, "GET", f"{api}/v1/drains")
        assert [(d["cluster"], d["by"], d["reason"]) for d in listed["drains"]] == [
            ("eu-west-prod", "ops", "upgrade"),
            ("us-east-prod", "", "upgrade"),
        ]
        assert all(d["at_ms"] > 0 for d in listed["drains"])
        # Whole regions drain and undrain at once.
        region = f"{api}/v1/regions/eu-west-1/drain"
        status, body = await call(s, "DELETE", region, ADMIN)
        assert status == 200 and body["cleared"] == ["eu-west-prod"]
        assert (await call(s, "POST", f"{api}/v1/regions/mars-1/drain", ADMIN, {}))[0] == 404


async def test_policy_override_wins_and_shows_its_source(redis_url: str) -> None:
    async with registry(redis_url) as api, aiohttp.ClientSession() as s:
        await call(s, "POST", f"{api}/v1/reports", US, report())
        _, svc = await call(s, "GET", f"{api}/v1/services/production/api")
        assert (svc["policy"]["kind"], svc["policy_source"]) == ("geo", "default")
        url = f"{api}/v1/services/production/api/policy"
        override = {"policy": {"kind": "weighted", "weights": {"us-east-prod": 1}}, "by": "ops"}
        assert (await call(s, "PUT", url, US, override))[0] == 401
        status, body = await call(s, "PUT", url, ADMIN, {"policy": {"kind": "failover"}})
        assert status == 400 and "needs 'order'" in body["error"]
        assert (await call(s, "PUT", url, ADMIN, override))[0] == 200
        _, svc = await call(s, "GET", f"{api}/v1/services/production/api")
        assert (svc["policy"]["kind"], svc["policy_source"]) == (
            "weighted",
            "registry override by ops",
        )
        assert (await call(s, "DELETE", url, ADMIN))[1]["was_overridden"] is True
        _, svc = await call(s, "GET", f"{api}/v1/services/production/api")
        assert svc["policy_source"] == "default"


async def test_the_api_and_the_drain_guard_judge_as_the_resolver_answers(redis_url: str) -> None:
    """One judge: an endpoint that still serves while it terminates is what the answers
    fall back to when nothing is ready, so the view counts its cluster as serving and
    draining that cluster would strand the service."""
    terminating = report(1, "10.0.0.1")
    terminating["services"][0]["endpoints"][0]["conditions"] = {
        "ready": False,
        "serving": True,
        "terminating": True,
    }
    async with registry(redis_url) as api, aiohttp.ClientSession() as s:
        await call(s, "POST", f"{api}/v1/reports", US, terminating)
        status, view = await call(s, "GET", f"{api}/v1/services/production/api")
        assert status == 200
        assert view["serving_clusters"] == ["us-east-prod"]
        [endpoint] = view["endpoints"]
        assert (endpoint["healthy"], endpoint["standby"]) == (False, True)
        status, body = await call(
            s, "POST", f"{api}/v1/clusters/us-east-prod/drain", ADMIN, {"dry_run": True}
        )
        assert status == 409 and body["impact"][0]["stranded"] is True
