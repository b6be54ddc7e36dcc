"""A frozen Redis (SIGSTOP) costs every API call a quick 503 with a JSON error; nothing
waits for Redis to resume.

Order, not speed, is what is asserted: every call has answered while Redis is *still*
frozen (it is resumed only after the last answer), so none of them waited for it. How
fast that is (the registry's GLOBALDNS_REDIS_TIMEOUT_S) is not a test's business.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import aiohttp

from globaldns.redis_server import RedisProcess
from tests.helpers import ADMIN, HANG_GUARD_S, TOKENS, registry
from tests.registry.test_api import report

US = TOKENS["us-east-prod"]

CALLS: list[tuple[str, str, str | None, Any]] = [
    ("POST", "/v1/reports", US, report(2, "10.0.0.2")),
    ("POST", "/v1/heartbeats", US, {"seq": 1}),
    ("GET", "/v1/clusters", None, None),
    ("GET", "/v1/services", None, None),
    ("GET", "/v1/services/production/api", None, None),
    ("GET", "/v1/drains", None, None),
    ("POST", "/v1/clusters/eu-west-prod/drain", ADMIN, {"reason": "frozen", "force": True}),
    ("DELETE", "/v1/clusters/eu-west-prod/drain", ADMIN, None),
    ("POST", "/v1/regions/eu-west-1/drain", ADMIN, {"dry_run": True}),
    ("PUT", "/v1/services/production/api/policy", ADMIN, {"policy": {"kind": "all"}}),
    ("DELETE", "/v1/services/production/api/policy", ADMIN, None),
    ("GET", "/readyz", None, None),
]


async def _call(
    session: aiohttp.ClientSession, api: str, method: str, path: str, token: str | None, body: Any
) -> tuple[str, int, str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.request(method, api + path, json=body, headers=headers) as response:
        return path, response.status, response.content_type, await response.json()


async def test_every_call_answers_503_json_while_redis_is_frozen(own_redis: RedisProcess) -> None:
    timeout = aiohttp.ClientTimeout(total=HANG_GUARD_S)
    async with registry(own_redis.url) as api, aiohttp.ClientSession(timeout=timeout) as s:
        _, status, *_ = await _call(s, api, "POST", "/v1/reports", US, report(1))
        assert status == 200  # the pool holds live connections, as in production
        assert own_redis.pid is not None
        os.kill(own_redis.pid, signal.SIGSTOP)
        try:
            answers = await asyncio.gather(
                *(_call(s, api, *call) for call in CALLS for _ in range(4))
            )
            assert own_redis.alive()  # still frozen: nobody waited for it to resume
        finally:
            os.kill(own_redis.pid, signal.SIGCONT)
        for path, status, content_type, body in answers:
            if (path, status) == ("/v1/reports", 429):
                # One report in flight per cluster: the others are refused at once.
                assert body["limit"] == "one report in flight per cluster"
                continue
            assert (path, status, content_type) == (path, 503, "application/json")
            assert body["error"] and "redis" in body.get("detail", body["error"])
        assert [s for p, s, *_ in answers if p == "/v1/reports"].count(503) == 1
        # Resumed: the same registry answers again (the abandoned connections were dropped).
        _, status, *_ = await _call(s, api, "POST", "/v1/reports", US, report(3, "10.0.0.3"))
        assert status == 200
        _, status, _, body = await _call(s, api, "GET", "/v1/services/production/api", None, None)
        assert status == 200 and [e["address"] for e in body["endpoints"]] == ["10.0.0.3"]
