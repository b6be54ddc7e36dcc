"""Client errors: every one a 4xx with a JSON body naming what is wrong, counted, logged once.

Bad input is the client's problem, never ours: it must not become a 500 with a traceback
in the log (issue #10 found four that did: a non-UTF-8 ``Authorization`` header, JSON
nested thousands deep, an integer of thousands of digits, a drain body that was a list).
So code that refuses a request raises :class:`Rejection` — a status, a *reason* from the
short list below, a message and the field at fault — which :func:`middleware` answers
with ``{"error": ..., "reason": ..., "field": ...}``; aiohttp's own ``HTTPException``
(401 from the token checks, 404 for an unknown route, 405) becomes a JSON
answer with its headers kept. The middleware counts every 4xx — a handler's own answer
too, its reason read from the status — in
``globaldns_registry_rejected_total{route,reason}`` (bounded labels: the route's pattern,
never the path, and a reason from :data:`Reason`), and logs it in one line without a
traceback. The log is itself rate limited (a flood of bad requests must not become a
flood of log lines): past the budget, lines are counted and the next line says how many
were left out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from registry.limits import Buckets, Rate

log = structlog.get_logger("registry.api")

Reason = Literal[
    "unauthorized",  # no token, or an unknown one
    "forbidden",
    "not_found",
    "method",
    "invalid",  # valid JSON, wrong content (the model's validation)
    "json",  # not JSON, or not UTF-8
    "json_depth",  # nested deeper than the bound
    "json_integer",  # an integer beyond 64 bits
    "body_shape",  # JSON, but not an object where one is expected
    "body_timeout",  # the body did not arrive in time
    "body_incomplete",  # the client went away, or sent an undecodable (gzip) body
    "too_large",
    "conflict",
    "rate_limited",
    "client_error",  # any other 4xx
]

_BY_STATUS: dict[int, Reason] = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method",
    408: "body_timeout",
    409: "conflict",
    413: "too_large",
    429: "rate_limited",
}


class Rejection(Exception):
    """A client error: answered ``status`` with a JSON body naming ``field``."""

    def __init__(
        self,
        status: int,
        reason: Reason,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        close: bool = False,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.field = field
        self.headers = headers or {}
        self.close = close
        """Close the connection after answering (the rest of the body is not worth reading)."""
        self.extra = extra

    def response(self) -> web.Response:
        body: dict[str, Any] = {"error": self.message, "reason": self.reason}
        if self.field is not None:
            body["field"] = self.field
        response = web.json_response({**body, **self.extra}, status=self.status)
        response.headers.update(self.headers)
        if self.close:
            response.force_close()
        return response


def reason_of(status: int) -> Reason:
    """The reason of a 4xx that did not come with one (a handler's own answer)."""
    return _BY_STATUS.get(status, "client_error")


def route_name(request: web.Request) -> str:
    """The route's pattern (``/v1/clusters/{name}/drain``), never the path: a bounded label."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


LOG_RATE = Rate(per_s=5.0, burst=20.0)
"""Refusals logged a second (and at once): the rest are counted, and said in the next line."""


class Rejections:
    """The counter and the log budget of one application."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        log_rate: Rate = LOG_RATE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.counter = Counter(
            "globaldns_registry_rejected",
            "requests answered with a client error (4xx), by route pattern and reason",
            ["route", "reason"],
            registry=registry,
        )
        self._budget = Buckets(log_rate)
        self._clock = clock
        self.unlogged = 0

    def record(
        self, request: web.Request, response: web.StreamResponse, reason: Reason, message: str
    ) -> None:
        route = route_name(request)
        self.counter.labels(route, reason).inc()
        if not self._budget.take("log", self._clock()).allowed:
            self.unlogged += 1
            return
        extra = {"unlogged": self.unlogged} if self.unlogged else {}
        self.unlogged = 0
        log.info(
            "request refused",
            method=request.method,
            route=route,
            status=response.status,
            reason=reason,
            error=_one_line(message[:300]),
            remote=request.remote,
            **extra,
        )


def _one_line(text: str) -> str:
    """Control characters (a field name from the request may hold a newline) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


REJECTIONS: web.AppKey[Rejections] = web.AppKey("rejections", Rejections)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


_ENTITY = frozenset({"Content-Type", "Content-Length"})


def _from_http(exc: web.HTTPException) -> web.Response:
    """aiohttp's exception as a JSON answer (its own body when it has one), headers kept
    (``WWW-Authenticate``, ``Allow``)."""
    headers = {k: v for k, v in exc.headers.items() if k not in _ENTITY}
    if exc.content_type == "application/json" and exc.text:
        return web.Response(
            status=exc.status, text=exc.text, content_type="application/json", headers=headers
        )
    return web.json_response({"error": exc.reason}, status=exc.status, headers=headers)


def _message(response: web.StreamResponse) -> str:
    body = response.text if isinstance(response, web.Response) else None
    if not body:
        return response.reason
    try:
        parsed = json.loads(body)
    except ValueError:
        return body
    return str(parsed.get("error", body)) if isinstance(parsed, dict) else body


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Innermost: turn refusals into JSON 4xx, then count and log every 4xx."""
    reason: Reason | None = None
    try:
        response = await handler(request)
    except Rejection as exc:
        response, reason = exc.response(), exc.reason
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _from_http(exc)
    if 400 <= response.status < 500:
        reason = reason or reason_of(response.status)
        request.app[REJECTIONS].record(request, response, reason, _message(response))
    return response
