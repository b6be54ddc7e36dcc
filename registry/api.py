"""The registry HTTP API: agents report here, operators look and drain here.

The cluster a report belongs to comes from its bearer token, never from the payload: a
token for ``us-east-prod`` cannot write ``eu-west-prod``'s records, and a report that names
another cluster is refused with 403. Invalid payloads get 400 with every field that is
wrong and why. A Redis outage is a 503 the agent retries, never a lost report: agents keep
their state and send it whole again.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, generate_latest
from pydantic import ValidationError

from registry import views
from registry.errors import StaleReport, StoreError
from registry.model import Drain, Heartbeat, Report, is_label
from registry.settings import RegistrySettings
from registry.store import Store
from registry.topology import Topology, describe

log = structlog.get_logger("registry.api")

STORE: web.AppKey[Store] = web.AppKey("store", Store)
SETTINGS: web.AppKey[RegistrySettings] = web.AppKey("settings", RegistrySettings)
TOPOLOGY: web.AppKey[Topology] = web.AppKey("topology", Topology)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Metrics:
    """The registry's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "globaldns_registry_requests",
            "API requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.reports = Counter(
            "globaldns_registry_reports",
            "whole-state reports stored, by cluster",
            ["cluster"],
            registry=self.registry,
        )
        self.store_errors = Counter(
            "globaldns_registry_store_errors",
            "requests that failed on Redis",
            registry=self.registry,
        )


METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)


def error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[METRICS]
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    try:
        response = await handler(request)
    except StoreError as exc:
        log.warning("redis unavailable", path=request.path, error=str(exc))
        metrics.store_errors.inc()
        response = error(503, "registry store unavailable, retry", detail=str(exc))
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            response = error(exc.status, exc.reason)
        elif exc.status >= 400:
            response = web.Response(
                status=exc.status, text=exc.text, content_type="application/json"
            )
        else:
            raise
    metrics.requests.labels(name, str(response.status)).inc()
    return response


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def cluster_of(request: web.Request) -> str:
    """The cluster whose token was presented; 401 otherwise."""
    token = _bearer(request)
    if token is None:
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "a cluster bearer token is required"}),
            content_type="application/json",
        )
    found = None
    for cluster, secret in request.app[SETTINGS].cluster_tokens.items():
        # Compare against every token so timing does not tell which one matched.
        if hmac.compare_digest(secret.get_secret_value().encode(), token.encode()):
            found = cluster
    if found is None:
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "unknown token"}), content_type="application/json"
        )
    return found


def require_admin(request: web.Request) -> None:
    admin = request.app[SETTINGS].admin_token
    token = _bearer(request)
    if admin is None:
        raise web.HTTPForbidden(
            text=json.dumps({"error": "admin calls are disabled: no admin token is configured"}),
            content_type="application/json",
        )
    if token is None or not hmac.compare_digest(admin.get_secret_value().encode(), token.encode()):
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "the admin bearer token is required"}),
            content_type="application/json",
        )


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"body is not JSON: {exc}"}),
            content_type="application/json",
        ) from None


def _invalid(exc: ValidationError) -> web.Response:
    problems = [
        {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "why": e["msg"]}
        for e in exc.errors()
    ]
    return error(400, f"invalid payload: {describe(exc)}", problems=problems)


def _lease_ttl_ms(request: web.Request) -> int:
    return int(request.app[SETTINGS].lease_ttl_s * 1000)


async def post_report(request: web.Request) -> web.Response:
    cluster = cluster_of(request)
    body = await _json_body(request)
    try:
        report = Report.model_validate(body)
    except ValidationError as exc:
        return _invalid(exc)
    if report.cluster is not None and report.cluster != cluster:
        return error(403, f"this token reports for {cluster}, not for {report.cluster}")
    region = request.app[TOPOLOGY].region_of(cluster)
    if region is None:
        return error(403, f"cluster {cluster} is not in the registry's topology")
    try:
        generation = await request.app[STORE].write_report(cluster, region, report)
    except StaleReport as exc:
        return error(409, str(exc), stored_seq=exc.stored_seq)
    request.app[METRICS].reports.labels(cluster).inc()
    log.info(
        "report stored",
        cluster=cluster,
        seq=report.seq,
        services=len(report.services),
        generation=generation,
    )
    return web.json_response({"cluster": cluster, "seq": report.seq, "generation": generation})


async def post_heartbeat(request: web.Request) -> web.Response:
    cluster = cluster_of(request)
    try:
        beat = Heartbeat.model_validate(await _json_body(request))
    except ValidationError as exc:
        return _invalid(exc)
    if await request.app[STORE].heartbeat(cluster, beat.seq):
        return web.json_response({"cluster": cluster, "seq": beat.seq})
    return error(409, "the registry does not hold this report: send the whole state", resync=True)


async def get_clusters(request: web.Request) -> web.Response:
    view = await request.app[STORE].view()
    return web.json_response(
        {
            "generation": view.generation,
            "clusters": views.clusters(
                view, request.app[TOPOLOGY], lease_ttl_ms=_lease_ttl_ms(request)
            ),
        }
    )


async def get_services(request: web.Request) -> web.Response:
    view = await request.app[STORE].view()
    services = views.services(view, lease_ttl_ms=_lease_ttl_ms(request))
    return web.json_response({"generation": view.generation, "services": list(services.values())})


async def get_service(request: web.Request) -> web.Response:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    view = await request.app[STORE].view()
    services = views.services(view, lease_ttl_ms=_lease_ttl_ms(request))
    found = services.get(f"{namespace}/{name}")
    if found is None:
        return error(404, f"no cluster exports {namespace}/{name}")
    return web.json_response({"generation": view.generation, **found})


def _known_cluster(request: web.Request) -> str:
    name = request.match_info["name"]
    known = {c.name for c in request.app[TOPOLOGY].clusters}
    if not is_label(name) or name not in known:
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"unknown cluster {name!r}", "known": sorted(known)}),
            content_type="application/json",
        )
    return name


async def post_drain(request: web.Request) -> web.Response:
    require_admin(request)
    cluster = _known_cluster(request)
    body = await _json_body(request) if request.can_read_body else {}
    try:
        drain = Drain.model_validate({**(body or {}), "at_ms": 0})
    except ValidationError as exc:
        return _invalid(exc)
    generation = await request.app[STORE].set_drain(cluster, drain)
    log.info("cluster drained", cluster=cluster, reason=drain.reason, by=drain.by)
    return web.json_response({"cluster": cluster, "state": "draining", "generation": generation})


async def delete_drain(request: web.Request) -> web.Response:
    require_admin(request)
    cluster = _known_cluster(request)
    existed = await request.app[STORE].clear_drain(cluster)
    log.info("cluster undrained", cluster=cluster, was_drained=existed)
    return web.json_response({"cluster": cluster, "state": "active", "was_drained": existed})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, content_type="text/plain")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[STORE].ping()
    except StoreError as exc:
        return error(503, "redis unreachable", detail=str(exc))
    return web.json_response({"status": "ready"})


def build_app(settings: RegistrySettings, topology: Topology, store: Store) -> web.Application:
    app = web.Application(middlewares=[errors_middleware], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[TOPOLOGY] = topology
    app[STORE] = store
    app[METRICS] = Metrics()
    app.router.add_post("/v1/reports", post_report)
    app.router.add_post("/v1/heartbeats", post_heartbeat)
    app.router.add_get("/v1/clusters", get_clusters)
    app.router.add_get("/v1/services", get_services)
    app.router.add_get("/v1/services/{namespace}/{name}", get_service)
    app.router.add_post("/v1/clusters/{name}/drain", post_drain)
    app.router.add_delete("/v1/clusters/{name}/drain", delete_drain)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
