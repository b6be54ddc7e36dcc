"""Bad input is the client's error, never ours (issue #10, bug 8): each of these was a 500
with a traceback in the log. Now each is a 4xx whose JSON names what is wrong, counted in
``globaldns_registry_rejected_total{route,reason}``, and logged in one line without a
traceback. Sent as raw bytes: no HTTP client would send some of them."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ADMIN, HANG_GUARD_S, TOKENS, registry

US = TOKENS["us-east-prod"].encode()


async def raw(
    port: int, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> tuple[int, str, Any]:
    """One request as bytes; the status, content type and JSON body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"{method} {path} HTTP/1.1\r\nHost: registry\r\nConnection: close\r\n".encode()
    head += b"Content-Length: %d\r\n" % len(body)
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    writer.write(head + b"\r\n" + body)
    answer = await asyncio.wait_for(reader.read(), HANG_GUARD_S)
    writer.close()
    await writer.wait_closed()
    top, _, payload = answer.partition(b"\r\n\r\n")
    lines = top.decode().split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), fields.get("Content-Type", ""), json.loads(payload)


async def rejected(port: int) -> dict[tuple[str, str], float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: registry\r\nConnection: close\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), HANG_GUARD_S)
    writer.close()
    await writer.wait_closed()
    text = answer.partition(b"\r\n\r\n")[2].decode()
    return {
        (s.labels["route"], s.labels["reason"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "globaldns_registry_rejected"
        for s in family.samples
        if s.name.endswith("_total")
    }


def bearer(token: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", b"Bearer " + token), (b"Content-Type", b"application/json")]


DEEP = b"[" * 100_000 + b"]" * 100_000
HUGE = b"9" * 5000

CASES = [
    # (name, method, path, headers, body, status, reason, what the message names)
    (
        "non-UTF-8 token, heartbeat",
        "POST",
        "/v1/heartbeats",
        [(b"Authorization", b"Bearer \xff\xfe\xfd")],
        b'{"seq": 1}',
        401,
        "unauthorized",
        "token",
    ),
    (
        "non-UTF-8 token, admin route",
        "POST",
        "/v1/clusters/us-east-prod/drain",
        [(b"Authorization", b"Bearer \xc3\x28")],
        b"{}",
        401,
        "unauthorized",
        "token",
    ),
    (
        "deep heartbeat",
        "POST",
        "/v1/heartbeats",
        bearer(US),
        b'{"seq": ' + DEEP + b"}",
        400,
        "json_depth",
        "deeper than 32",
    ),
    (
        "deep report",
        "POST",
        "/v1/reports",
        bearer(US),
        b'{"seq": 1, "services": ' + DEEP + b"}",
        400,
        "json_depth",
        "recursion limit",
    ),
    (
        "huge integer, heartbeat",
        "POST",
        "/v1/heartbeats",
        bearer(US),
        b'{"seq": ' + HUGE + b"}",
        400,
        "json_integer",
        "5000 digits",
    ),
    (
        "65-bit integer, heartbeat",
        "POST",
        "/v1/heartbeats",
        bearer(US),
        b'{"seq": 18446744073709551617}',
        400,
        "json_integer",
        "64 bits",
    ),
    (
        "huge integer, report",
        "POST",
        "/v1/reports",
        bearer(US),
        b'{"seq": ' + HUGE + b', "services": []}',
        400,
        "json_integer",
        "out of range",
    ),
    (
        "65-bit seq, report",
        "POST",
        "/v1/reports",
        bearer(US),
        b'{"seq": 18446744073709551617, "services": []}',
        400,
        "invalid",
        "seq",
    ),
    (
        "drain body a list",
        "POST",
        "/v1/clusters/us-east-prod/drain",
        bearer(ADMIN.encode()),
        b"[1, 2]",
        400,
        "body_shape",
        "object",
    ),
    (
        "drain body a string",
        "POST",
        "/v1/clusters/us-east-prod/drain",
        bearer(ADMIN.encode()),
        b'"now"',
        400,
        "body_shape",
        "object",
    ),
    (
        "policy body a list",
        "PUT",
        "/v1/services/production/api/policy",
        bearer(ADMIN.encode()),
        b"[]",
        400,
        "body_shape",
        "object",
    ),
    (
        "drain reason with a lone surrogate",
        "POST",
        "/v1/clusters/us-east-prod/drain",
        bearer(ADMIN.encode()),
        b'{"reason": "\\ud800"}',
        400,
        "json",
        "surrogate",
    ),
    (
        "a string never closed, of escaped quotes (a quadratic scan would hang here)",
        "POST",
        "/v1/clusters/us-east-prod/drain",
        bearer(ADMIN.encode()),
        b'{"reason": "' + b'\\"' * 300_000,
        400,
        "json",
        "not JSON",
    ),
    (
        "drain body not UTF-8",
        "POST",
        "/v1/clusters/us-east-prod/drain",
        bearer(ADMIN.encode()),
        b'{"reason": "\xff"}',
        400,
        "json",
        "UTF-8",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "reason", "names"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_bad_input_is_a_4xx_naming_it_counted_and_logged_once(
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    status: int,
    reason: str,
    names: str,
) -> None:
    route = path.replace("us-east-prod", "{name}").replace("production/api", "{namespace}/{name}")
    async with registry(redis_url) as api:
        port = int(api.rsplit(":", 1)[1])
        before = (await rejected(port)).get((route, reason), 0.0)
        with structlog.testing.capture_logs() as logs, caplog.at_level(logging.DEBUG):
            got, content_type, answer = await raw(port, method, path, headers, body)
        assert (got, content_type) == (status, "application/json; charset=utf-8")
        assert names in json.dumps(answer), answer
        assert answer.get("reason", reason) == reason
        assert (await rejected(port))[(route, reason)] == before + 1
        refused = [e for e in logs if e["event"] == "request refused"]
        assert len(refused) == 1 and refused[0]["reason"] == reason
        assert refused[0]["route"] == route and refused[0]["status"] == status
        assert not any("exc_info" in e or "exception" in e for e in logs)
        assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_a_refusal_naming_a_field_of_the_request_is_still_one_line(redis_url: str) -> None:
    async with registry(redis_url) as api:
        port = int(api.rsplit(":", 1)[1])
        with structlog.testing.capture_logs() as logs:
            status, _, answer = await raw(
                port,
                "POST",
                "/v1/clusters/us-east-prod/drain",
                bearer(ADMIN.encode()),
                b'{"reason": "x", "by\\nforged line": 1}',
            )
        assert status == 400, answer
        assert [p["field"] for p in answer["problems"]] == ["by\nforged line"]
        (refused,) = [e for e in logs if e["event"] == "request refused"]
        assert "\n" not in refused["error"] and "by\\nforged line" in refused["error"]
