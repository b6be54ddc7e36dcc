"""The registry HTTP API: agents report here, operators look and drain here.

The cluster a report belongs to comes from its bearer token, never from the payload: a
token for ``us-east-prod`` cannot write ``eu-west-prod``'s records, and a report that names
another cluster is refused with 403. Invalid payloads get 400 with every field that is
wrong and why. A Redis outage is a 503 the agent retries, never a lost report: agents keep
their state and send it whole again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from pydantic import ValidationError

from registry import auth, bodies, drains, grants, keys, rejections, statuspage, throttle, views
from registry.badrecords import BadRecord
from registry.errors import LimitExceeded, NeedResync, StaleReport, StoreError
from registry.journal import Journal
from registry.model import (
    Admission,
    Drain,
    Heartbeat,
    PolicyOverride,
    RegistryView,
    Report,
    content_hash,
    is_label,
)
from registry.rejections import REJECTIONS, Rejections, route_name
from registry.settings import RegistrySettings
from registry.store import Decided, Store
from registry.topology import Topology, describe
from registry.upkeep import Upkeep

log = structlog.get_logger("registry.api")

STORE: web.AppKey[Store] = web.AppKey("store", Store)
SETTINGS: web.AppKey[RegistrySettings] = web.AppKey("settings", RegistrySettings)
TOPOLOGY: web.AppKey[Topology] = web.AppKey("topology", Topology)
GRANTS: web.AppKey[grants.Grants] = web.AppKey("grants", grants.Grants)
TOKENS: web.AppKey[auth.Tokens] = web.AppKey("tokens", auth.Tokens)

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
            "reports stored, by cluster and kind (whole, delta)",
            ["cluster", "kind"],
            registry=self.registry,
        )
        self.services_written = Counter(
            "globaldns_registry_services_written",
            "services written or removed by reports (unchanged ones are not written)",
            ["cluster"],
            registry=self.registry,
        )
        self.report_seconds = Histogram(
            "globaldns_registry_report_seconds",
            "time to handle a report, from its first byte read to the answer, by kind",
            ["kind"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.refused = Counter(
            "globaldns_registry_reports_refused",
            "reports refused, by why (invalid, stale, resync, limit, not granted)",
            ["why"],
            registry=self.registry,
        )
        self.store_errors = Counter(
            "globaldns_registry_store_errors",
            "requests that failed on Redis",
            registry=self.registry,
        )
        self.decisions_restored = Counter(
            "globaldns_registry_decisions_restored",
            "operator decisions (drains, overrides, their clearing) written back to a Redis "
            "that had lost them",
            registry=self.registry,
        )


class BadRecords(Collector):
    """``globaldns_registry_bad_records_total{key}``: records the store skipped as
    unreadable, by the kind of key (:data:`registry.keys.PATTERNS`)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "globaldns_registry_bad_records",
            "records read from Redis that could not be read and were skipped, by kind of key",
            labels=["key"],
        )
        counts = self.store.bad_records.counts
        for pattern in (*keys.PATTERNS, "other"):
            family.add_metric([pattern], counts.get(pattern, 0))
        yield family


METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
JOURNAL: web.AppKey[Journal] = web.AppKey("journal", Journal)
HTTP: web.AppKey[aiohttp.ClientSession] = web.AppKey("http", aiohttp.ClientSession)


def error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[METRICS]
    try:
        response = await handler(request)
    except StoreError as exc:
        log.warning("redis unavailable", path=request.path, error=str(exc))
        metrics.store_errors.inc()
        response = error(503, "registry store unavailable, retry", detail=str(exc))
    metrics.requests.labels(route_name(request), str(response.status)).inc()
    return response


def _bearer(request: web.Request) -> str | None:
    return auth.bearer(request.headers.get("Authorization", ""))


def _unauthorized(message: str) -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(
        text=json.dumps({"error": message}),
        content_type="application/json",
        headers={"WWW-Authenticate": 'Bearer realm="globaldns"'},
    )


def cluster_of(request: web.Request) -> str:
    """The cluster whose token was presented; 401 otherwise."""
    token = _bearer(request)
    if token is None:
        raise _unauthorized("a cluster bearer token is required")
    found = request.app[TOKENS].cluster(token)
    if found is None:
        raise _unauthorized("unknown token")
    return found


def require_admin(request: web.Request) -> None:
    tokens = request.app[TOKENS]
    if not tokens.admin:
        raise web.HTTPForbidden(
            text=json.dumps({"error": "admin calls are disabled: no admin token is configured"}),
            content_type="application/json",
        )
    if not tokens.is_admin(_bearer(request)):
        raise _unauthorized("the admin bearer token is required")


def require_reader(request: web.Request) -> None:
    """Inspection routes: open unless a read token is configured (admin also reads)."""
    if not request.app[TOKENS].may_read(_bearer(request)):
        raise _unauthorized("the read (or admin) bearer token is required")


async def _json_body(request: web.Request, what: str) -> dict[str, Any]:
    """The body as a JSON object (empty: ``{}``), read and parsed within the bounds of
    :mod:`registry.bodies`."""
    settings = request.app[SETTINGS]
    try:
        raw = await bodies.read(
            request, limit=settings.max_body_bytes, timeout=settings.http_body_timeout_s
        )
    except LimitExceeded as exc:
        raise bodies.too_large(exc) from None
    return bodies.parse_object(raw, what=what)


def _invalid(exc: ValidationError) -> web.Response:
    problems = [
        {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "why": e["msg"]}
        for e in exc.errors()
    ]
    return error(400, f"invalid payload: {describe(exc)}", problems=problems)


def _lease_ttl_ms(request: web.Request) -> int:
    return int(request.app[SETTINGS].lease_ttl_s * 1000)


_THREAD_PARSE_BYTES = 256 << 10
"""Reports larger than this are parsed off the event loop (heartbeats must not wait)."""


def _parse_report(raw: bytes, admission: Admission) -> tuple[Report, dict[str, str]]:
    # Strict: "80" is not a port, 1.0 not a seq, "true" not a condition.
    report = Report.model_validate_json(raw, strict=True, context=admission)
    return report, {s.key: content_hash(s) for s in report.services}


def _over_limit(exc: LimitExceeded) -> web.Response:
    return error(413, str(exc), limit=exc.limit, value=exc.value, max=exc.maximum)


async def post_report(request: web.Request) -> web.Response:
    cluster = cluster_of(request)
    started = time.perf_counter()
    settings, metrics = request.app[SETTINGS], request.app[METRICS]
    try:
        raw = await bodies.read(
            request,
            limit=settings.max_report_bytes,
            timeout=settings.http_body_timeout_s,
            what="report bytes",
        )
    except LimitExceeded as exc:
        metrics.refused.labels("limit").inc()
        return _over_limit(exc)
    admission = Admission(loopback=settings.allow_loopback_endpoints)
    try:
        if len(raw) > _THREAD_PARSE_BYTES:
            report, digests = await asyncio.to_thread(_parse_report, raw, admission)
        else:
            report, digests = _parse_report(raw, admission)
    except ValidationError as exc:
        metrics.refused.labels("invalid").inc()
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise bodies.unparsable(first["msg"]) from None
        return _invalid(exc)
    if report.cluster is not None and report.cluster != cluster:
        return error(403, f"this token reports for {cluster}, not for {report.cluster}")
    region = request.app[TOPOLOGY].region_of(cluster)
    if region is None:
        return error(403, f"cluster {cluster} is not in the registry's topology")
    grant = request.app[GRANTS].of(cluster)
    refused = grants.refusals(grant, ((s.key, s.policy is not None) for s in report.services))
    if refused:
        metrics.refused.labels("not granted").inc()
        log.warning(
            "report refused: not granted",
            cluster=cluster,
            refused=len(refused),
            first=refused[0].service,
            why=refused[0].why,
        )
        named = "; ".join(f"{r.field}: {r.service}: {r.why}" for r in refused[:3])
        more = f" (and {len(refused) - 3} more)" if len(refused) > 3 else ""
        return error(
            403,
            f"{named}{more}; {cluster} {grant.describe()}",
            field=refused[0].field,
            refused=[r.as_json() for r in refused[:100]],
            grant=grant.as_json(),
        )
    kind = "delta" if report.is_delta else "whole"
    try:
        _check_limits(report, settings)
        written = await request.app[STORE].write_report(
            cluster,
            region,
            report,
            max_services=settings.max_services_per_cluster,
            digests=digests,
        )
    except LimitExceeded as exc:
        metrics.refused.labels("limit").inc()
        return _over_limit(exc)
    except StaleReport as exc:
        metrics.refused.labels("stale").inc()
        return error(409, str(exc), stored_seq=exc.stored_seq)
    except NeedResync as exc:
        metrics.refused.labels("resync").inc()
        return error(409, str(exc), stored_seq=exc.stored_seq, resync=True)
    metrics.reports.labels(cluster, kind).inc()
    metrics.services_written.labels(cluster).inc(written.changed + written.removed)
    metrics.report_seconds.labels(kind).observe(time.perf_counter() - started)
    if not report.is_delta:
        log.info(
            "whole state stored",
            cluster=cluster,
            seq=report.seq,
            services=len(report.services),
            changed=written.changed,
            removed=written.removed,
            generation=written.generation,
        )
    return web.json_response(
        {
            "cluster": cluster,
            "seq": report.seq,
            "generation": written.generation,
            "changed": written.changed,
            "removed": written.removed,
        }
    )


def _check_limits(report: Report, settings: RegistrySettings) -> None:
    if not report.is_delta and len(report.services) > settings.max_services_per_cluster:
        raise LimitExceeded(
            "services per cluster", len(report.services), settings.max_services_per_cluster
        )
    for service in report.services:
        if len(service.endpoints) > settings.max_endpoints_per_service:
            raise LimitExceeded(
                f"endpoints per service ({service.key})",
                len(service.endpoints),
                settings.max_endpoints_per_service,
            )


async def get_grants(request: web.Request) -> web.Response:
    """What the calling cluster may export and annotate (its agent leaves out the rest)."""
    cluster = cluster_of(request)
    return web.json_response({"cluster": cluster, **request.app[GRANTS].of(cluster).as_json()})


async def post_heartbeat(request: web.Request) -> web.Response:
    cluster = cluster_of(request)
    try:
        beat = Heartbeat.model_validate(await _json_body(request, "a heartbeat"), strict=True)
    except ValidationError as exc:
        return _invalid(exc)
    if await request.app[STORE].heartbeat(cluster, beat.seq):
        return web.json_response({"cluster": cluster, "seq": beat.seq})
    return error(409, "the registry does not hold this report: send the whole state", resync=True)


async def _view(request: web.Request) -> RegistryView:
    """The registry as the GET routes show it: every cluster ``gdns:clusters`` lists,
    and those of the topology too (should the set be unreadable)."""
    topology = request.app[TOPOLOGY]
    return await request.app[STORE].view(also=[c.name for c in topology.clusters])


def _problems(found: Iterable[BadRecord]) -> list[dict[str, str]]:
    """What a read skipped because Redis held something it cannot read: listed beside
    the answer, which shows everything else (never a 500 for one bad record)."""
    return [record.as_dict() for record in found]


async def get_clusters(request: web.Request) -> web.Response:
    require_reader(request)
    view = await _view(request)
    return web.json_response(
        {
            "generation": view.generation,
            "clusters": views.clusters(
                view, request.app[TOPOLOGY], lease_ttl_ms=_lease_ttl_ms(request)
            ),
            "problems": _problems(view.problems),
        }
    )


async def get_services(request: web.Request) -> web.Response:
    require_reader(request)
    view = await _view(request)
    services = views.services(view, lease_ttl_ms=_lease_ttl_ms(request), grants=request.app[GRANTS])
    return web.json_response(
        {
            "generation": view.generation,
            "services": list(services.values()),
            "problems": _problems(view.problems),
        }
    )


async def get_service(request: web.Request) -> web.Response:
    require_reader(request)
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    view = await _view(request)
    services = views.services(view, lease_ttl_ms=_lease_ttl_ms(request), grants=request.app[GRANTS])
    found = services.get(f"{namespace}/{name}")
    if found is None:
        return error(
            404, f"no cluster exports {namespace}/{name}", problems=_problems(view.problems)
        )
    return web.json_response(
        {"generation": view.generation, **found, "problems": _problems(view.problems)}
    )


def _known_cluster(request: web.Request) -> str:
    name = request.match_info["name"]
    known = {c.name for c in request.app[TOPOLOGY].clusters}
    if not is_label(name) or name not in known:
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"unknown cluster {name!r}", "known": sorted(known)}),
            content_type="application/json",
        )
    return name


def _region_clusters(request: web.Request) -> list[str]:
    region = request.match_info["region"]
    topology = request.app[TOPOLOGY]
    clusters = sorted(c.name for c in topology.clusters if c.region == region)
    if not clusters:
        regions = sorted({c.region for c in topology.clusters})
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"no cluster in region {region!r}", "known": regions}),
            content_type="application/json",
        )
    return clusters


class DrainRequest(Drain):
    dry_run: bool = False
    force: bool = False


async def _drain(request: web.Request, clusters: list[str], label: str) -> web.Response:
    require_admin(request)
    body = await _json_body(request, "a drain")
    try:
        asked = DrainRequest.model_validate({**body, "at_ms": 0}, strict=True)
    except ValidationError as exc:
        return _invalid(exc)
    store = request.app[STORE]
    view = await _view(request)
    effects = drains.impact(
        view, request.app[TOPOLOGY], clusters, lease_ttl_ms=_lease_ttl_ms(request)
    )
    stranded = [i.service for i in effects if i.stranded]
    result: dict[str, Any] = {
        "clusters": clusters,
        "dry_run": asked.dry_run,
        "impact": [i.as_dict() for i in effects],
    }
    if stranded and not asked.force:
        return error(
            409,
            f"draining {label} would leave {', '.join(stranded)} with no healthy cluster; "
            "use force to drain anyway",
            **result,
        )
    if asked.dry_run:
        return web.json_response(result)
    reason = asked.reason or ""
    for cluster in clusters:
        drain = Drain(reason=reason, by=asked.by)
        result["generation"] = (await _decided(request, store.set_drain(cluster, drain))).generation
    log.info("drained", clusters=clusters, reason=reason, by=asked.by, forced=bool(stranded))
    return web.json_response({**result, "state": "draining"})


async def _undrain(request: web.Request, clusters: list[str]) -> web.Response:
    require_admin(request)
    store = request.app[STORE]
    cleared = [c for c in clusters if (await _decided(request, store.clear_drain(c))).existed]
    log.info("undrained", clusters=clusters, were_drained=cleared)
    return web.json_response(
        {"clusters": clusters, "state": "active", "was_drained": bool(cleared), "cleared": cleared}
    )


async def _decided(request: web.Request, deciding: Awaitable[Decided]) -> Decided:
    """Make an operator decision, then keep it in this replica's journal (which puts it
    back if Redis loses it) before answering."""
    done = await deciding
    await request.app[JOURNAL].record([done.decision])
    return done


async def post_drain(request: web.Request) -> web.Response:
    cluster = _known_cluster(request)
    return await _drain(request, [cluster], cluster)


async def delete_drain(request: web.Request) -> web.Response:
    return await _undrain(request, [_known_cluster(request)])


async def post_region_drain(request: web.Request) -> web.Response:
    region = request.match_info["region"]
    return await _drain(request, _region_clusters(request), f"region {region}")


async def delete_region_drain(request: web.Request) -> web.Response:
    return await _undrain(request, _region_clusters(request))


async def get_drains(request: web.Request) -> web.Response:
    require_reader(request)
    current, problems = await request.app[STORE].drains()
    return web.json_response(
        {
            "drains": [{"cluster": c, **d.model_dump()} for c, d in sorted(current.items())],
            "problems": _problems(problems),
        }
    )


async def put_policy(request: web.Request) -> web.Response:
    require_admin(request)
    key = f"{request.match_info['namespace']}/{request.match_info['name']}"
    try:
        override = PolicyOverride.model_validate(
            {**(await _json_body(request, "a policy override")), "at_ms": 0}
        )
    except ValidationError as exc:
        return _invalid(exc)
    unknown = _unknown_names(override, request.app[TOPOLOGY])
    if unknown:
        return error(400, unknown[1], field=unknown[0])
    generation = (await _decided(request, request.app[STORE].set_policy(key, override))).generation
    log.info("policy override set", service=key, kind=override.policy.kind, by=override.by)
    return web.json_response({"service": key, "generation": generation, **override.model_dump()})


def _unknown_names(override: PolicyOverride, topology: Topology) -> tuple[str, str] | None:
    """An override that names a cluster (or region) the topology lacks would send no
    client anywhere it means: (field, message), or None when every name is known."""
    clusters = {c.name for c in topology.clusters}
    regions = {r.name for r in topology.regions}
    policy = override.policy
    for name in sorted(policy.weights):
        if name not in clusters:
            known = ", ".join(sorted(clusters))
            return "policy.weights", f"policy.weights: {name!r} is not a cluster ({known})"
    for i, name in enumerate(policy.order):
        if name not in clusters | regions:
            return (
                f"policy.order[{i}]",
                f"policy.order[{i}]: {name!r} is neither a cluster nor a region of the topology",
            )
    return None


async def delete_policy(request: web.Request) -> web.Response:
    require_admin(request)
    key = f"{request.match_info['namespace']}/{request.match_info['name']}"
    existed = (await _decided(request, request.app[STORE].clear_policy(key))).existed
    return web.json_response({"service": key, "was_overridden": existed})


async def get_explain(request: web.Request) -> web.Response:
    """Proxied to a resolver: the decision is the resolver's, computed from its snapshot."""
    require_admin(request)  # a trace for any client shows what is unhealthy, and where
    url = request.app[SETTINGS].resolver_url
    if not url:
        return error(501, "no resolver to ask: set GLOBALDNS_RESOLVER_URL")
    session = request.app[HTTP]
    try:
        async with session.get(
            f"{url.rstrip('/')}/v1/explain",
            params=request.query,
            headers={"Authorization": request.headers["Authorization"]},
            timeout=aiohttp.ClientTimeout(total=5),
        ) as response:
            return web.json_response(await response.json(), status=response.status)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return error(502, f"resolver at {url} did not answer: {exc}")


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
    app = web.Application(
        middlewares=[errors_middleware, rejections.middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[TOPOLOGY] = topology
    app[GRANTS] = topology.grants()
    app[TOKENS] = settings.tokens()
    app[STORE] = store
    app[METRICS] = Metrics()
    app[METRICS].registry.register(BadRecords(store))
    app[REJECTIONS] = Rejections(app[METRICS].registry)
    app[throttle.REPORTS] = throttle.ReportLimits(settings.report_limit())
    app[JOURNAL] = Journal(settings.state_dir)

    async def http_client(app: web.Application) -> AsyncIterator[None]:
        app[HTTP] = aiohttp.ClientSession()
        yield
        await app[HTTP].close()

    async def upkeep(app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        keeper = Upkeep(store, app[JOURNAL], on_restored=app[METRICS].decisions_restored.inc)
        task = asyncio.create_task(keeper.run(stop), name="registry-upkeep")
        yield
        stop.set()
        await task

    app.cleanup_ctx.append(http_client)
    app.cleanup_ctx.append(upkeep)
    app.router.add_post("/v1/reports", throttle.limited(post_report, cluster_of))
    app.router.add_post("/v1/heartbeats", post_heartbeat)
    app.router.add_get("/v1/grants", get_grants)
    app.router.add_get("/v1/clusters", get_clusters)
    app.router.add_get("/v1/services", get_services)
    app.router.add_get("/v1/services/{namespace}/{name}", get_service)
    app.router.add_post("/v1/clusters/{name}/drain", post_drain)
    app.router.add_delete("/v1/clusters/{name}/drain", delete_drain)
    app.router.add_post("/v1/regions/{region}/drain", post_region_drain)
    app.router.add_delete("/v1/regions/{region}/drain", delete_region_drain)
    app.router.add_get("/v1/drains", get_drains)
    app.router.add_put("/v1/services/{namespace}/{name}/policy", put_policy)
    app.router.add_delete("/v1/services/{namespace}/{name}/policy", delete_policy)
    app.router.add_get("/v1/explain", get_explain)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    statuspage.add_routes(app, store, topology, settings, app[TOKENS])
    return app
