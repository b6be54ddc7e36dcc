"""Every route under generated hostile input: never a 5xx, never another cluster touched.

Hypothesis writes the requests byte by byte — any route of the registry's router with
any path parameters, any method, headers that are not UTF-8, bearer tokens that are
garbage or belong to another role, bodies that are not JSON, nest ten thousand deep,
carry 5,000-digit integers, are report-shaped with a field of the wrong type, or claim
gzip — and sends them over a real socket to the real registry on a real Redis. After
each request: the answer is a 2xx, 3xx or 4xx (a 4xx with a JSON body saying what is
wrong), and the records of eu-west-prod, which no request here may write, are as they
were.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.model import Report
from registry.store import opened
from tests.helpers import ADMIN, TOKENS, registry

US, EU = TOKENS["us-east-prod"], TOKENS["eu-west-prod"]

ROUTES = [
    ("POST", "/v1/reports"),
    ("POST", "/v1/heartbeats"),
    ("GET", "/v1/grants"),
    ("GET", "/v1/clusters"),
    ("GET", "/v1/services"),
    ("GET", "/v1/services/{namespace}/{name}"),
    ("POST", "/v1/clusters/{name}/drain"),
    ("DELETE", "/v1/clusters/{name}/drain"),
    ("POST", "/v1/regions/{region}/drain"),
    ("DELETE", "/v1/regions/{region}/drain"),
    ("GET", "/v1/drains"),
    ("PUT", "/v1/services/{namespace}/{name}/policy"),
    ("DELETE", "/v1/services/{namespace}/{name}/policy"),
    ("GET", "/v1/explain"),
    ("GET", "/metrics"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
]
"""Every route the registry serves (checked against its router below)."""


@contextmanager
def registry_thread(redis_url: str) -> Iterator[tuple[str, int]]:
    """The registry on its own event loop in a thread, so that hypothesis (synchronous)
    can talk to it over sockets."""
    ready: list[tuple[str, int]] = []
    started = threading.Event()
    running: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
    failure: list[BaseException] = []

    async def main() -> None:
        stop = asyncio.Event()
        running.append((asyncio.get_running_loop(), stop))
        async with registry(redis_url) as api:
            host, port = api.removeprefix("http://").split(":")
            ready.append((host, int(port)))
            started.set()
            await stop.wait()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced in the test, not lost in the thread
            failure.append(exc)
        finally:
            started.set()

    thread = threading.Thread(target=run, name="registry", daemon=True)
    thread.start()
    started.wait(60)
    try:
        if not ready:
            raise failure[0] if failure else TimeoutError("the registry did not start")
        yield ready[0]
    finally:
        if running:
            loop, stop = running[0]
            loop.call_soon_threadsafe(stop.set)
        thread.join(60)
    if failure:
        raise failure[0]


# -- what hypothesis sends --------------------------------------------------------------

label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
odd_text = st.text(max_size=40)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | odd_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4),
    max_leaves=12,
)


def _endpoint(address: Any) -> dict[str, Any]:
    return {"address": address, "conditions": {"ready": True}}


report_fields = st.fixed_dictionaries(
    {
        "seq": st.one_of(st.integers(), st.text(max_size=5), st.just(10**40), st.floats()),
        "services": st.lists(
            st.fixed_dictionaries(
                {
                    "namespace": st.one_of(label, odd_text, st.integers()),
                    "name": st.one_of(label, odd_text),
                    "ports": st.one_of(
                        st.just([{"name": "http", "port": 80}]),
                        st.lists(
                            st.fixed_dictionaries(
                                {"port": st.one_of(st.integers(), st.text(max_size=4))}
                            ),
                            max_size=3,
                        ),
                    ),
                    "endpoints": st.lists(
                        st.one_of(
                            st.builds(
                                _endpoint,
                                st.sampled_from(
                                    [
                                        "10.0.0.1",
                                        "2001:db8::66%x",
                                        "::ffff:169.254.169.254",
                                        "224.0.0.1",
                                        "0.0.0.0",
                                        "not-an-ip",
                                        "10.0.0.256",
                                    ]
                                ),
                            ),
                            json_values,
                        ),
                        max_size=3,
                    ),
                    "policy": st.one_of(st.none(), json_values),
                }
            ),
            max_size=3,
        ),
    }
)


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    report_fields.map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=1, max_value=20_000).map(_deep),
    st.integers(min_value=10, max_value=6_000).map(lambda n: b'{"seq": ' + b"7" * n + b"}"),
    st.just(b'{"reason": ' + b'"x' + b"\xff" * 10 + b'"}'),
)

tokens = st.one_of(
    st.none(),
    st.sampled_from([US, ADMIN, "wrong-token-0123456789"]),
    st.binary(min_size=1, max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b),
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method, path = draw(st.sampled_from(ROUTES))
    method = draw(st.one_of(st.just(method), st.sampled_from(["GET", "POST", "PUT", "PATCH"])))
    for param in ("{namespace}", "{name}", "{region}"):
        if param in path:
            value = draw(st.one_of(label, st.text(alphabet="%-._~aZ09", min_size=1, max_size=20)))
            path = path.replace(param, value)
    if draw(st.booleans()):
        path += "?" + draw(
            st.sampled_from(["name=x", "client=::1", "client=%ff", "name=" + "a" * 300])
        )
    body = draw(bodies)
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: registry", b"Connection: close"]
    token = draw(tokens)
    if token is not None:
        raw = token if isinstance(token, bytes) else token.encode()
        lines.append(b"Authorization: Bearer " + raw)
    if draw(st.booleans()):
        lines.append(b"Content-Type: application/json")
    if draw(st.integers(0, 9)) == 0:
        lines.append(b"Content-Encoding: gzip")
    lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def send(address: tuple[str, int], request: bytes) -> tuple[int, bytes, bytes]:
    """The status, the header block (lower-cased) and the body of the answer."""
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks)
    status = int(answer.split(b" ", 2)[1])
    head, _, body = answer.partition(b"\r\n\r\n")
    return status, head.lower(), body


def eu_records(redis_url: str) -> Any:
    async def read() -> Any:
        async with opened(redis_url) as store:
            state = await store.cluster("eu-west-prod")
        return state.model_dump() if state else None

    return asyncio.run(read())


def seed(redis_url: str) -> None:
    async def write() -> None:
        async with opened(redis_url) as store:
            for cluster, region, address in (
                ("eu-west-prod", "eu-west-1", "10.2.0.1"),
                ("us-east-prod", "us-east-1", "10.1.0.1"),
            ):
                report = {
                    "seq": 1,
                    "services": [
                        {
                            "namespace": "production",
                            "name": "api",
                            "ports": [{"name": "http", "port": 80}],
                            "endpoints": [_endpoint(address)],
                        }
                    ],
                }
                await store.write_report(
                    cluster, region, Report.model_validate(report), max_services=100
                )

    asyncio.run(write())


def test_the_route_list_is_every_route() -> None:
    from registry.api import build_app
    from registry.settings import RegistrySettings
    from tests.helpers import topology

    app = build_app(RegistrySettings(), topology(), store=None)  # type: ignore[arg-type]
    served = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    }
    assert served == set(ROUTES)


def test_no_input_gets_a_5xx_or_touches_another_cluster(redis_url: str) -> None:
    seed(redis_url)
    before = eu_records(redis_url)
    assert before is not None
    with registry_thread(redis_url) as address:

        @settings(
            max_examples=300,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            derandomize=True,
        )
        @given(requests())
        def one(request: bytes) -> None:
            status, head, body = send(address, request)
            assert status < 500, (request[:300], body[:300])
            if status >= 400 and b"content-type: text/plain" in head:
                # Not HTTP (a control byte in a header): aiohttp's parser answers 400
                # naming the byte, before any handler runs.
                assert status == 400 and body.startswith(b"Invalid"), body[:300]
            elif status >= 400:
                assert "error" in json.loads(body), body[:300]
            assert eu_records(redis_url) == before, request[:300]

        one()


HOSTILE_BODIES = {
    "nested 50,000 deep": b"[" * 50_000 + b"]" * 50_000,
    "a 5,000-digit integer": b'{"seq": ' + b"9" * 5_000 + b', "services": []}',
    "not an object": b"[1, 2]",
    "a string": b'"drain"',
    "not UTF-8": b'{"reason": "\xff\xfe"}',
    "not JSON": b"{seq: 1",
}
WRITES = [
    ("POST", "/v1/reports", US),
    ("POST", "/v1/heartbeats", US),
    ("POST", "/v1/clusters/us-east-prod/drain", ADMIN),
    ("POST", "/v1/regions/us-east-1/drain", ADMIN),
    ("PUT", "/v1/services/production/api/policy", ADMIN),
]


def test_every_body_taking_route_refuses_hostile_bodies_with_a_4xx(redis_url: str) -> None:
    """Bug 8's bodies, on every route that reads one: 400 naming what is wrong, never a
    500 with a traceback."""
    seed(redis_url)
    with registry_thread(redis_url) as address:
        for method, path, token in WRITES:
            for why, body in HOSTILE_BODIES.items():
                request = (
                    f"{method} {path} HTTP/1.1\r\nHost: registry\r\nConnection: close\r\n"
                    f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode() + body
                status, _head, answer = send(address, request)
                assert 400 <= status < 500, (method, path, why, status, answer[:200])
                assert json.loads(answer)["error"], (method, path, why)
