"""The resolver process: startup → serve until the stop event → shutdown.

Listening starts at once, but ``/readyz`` turns true only after the first full load:
until then every in-zone name would be NXDOMAIN, so a load balancer must not send
queries yet (CoreDNS's ``ready`` plugin works the same way). It turns false again while
the snapshot is older than ``GLOBALDNS_MAX_SNAPSHOT_AGE_S`` (Redis unreachable, or the
sync failing), saying why; answering goes on from the snapshot all the same.

The sync task is supervised: if it raises (a bug, or data nobody foresaw), it is logged
in one line, counted (``globaldns_resolver_sync_restarts``) and started again after a
jittered back-off, never left dead behind answers that silently stop changing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from registry import connection
from registry import store as store_mod
from registry import topology as topology_mod
from registry.aio import sleep_or_stop, supervise
from registry.auth import Tokens, bearer
from registry.errors import ConfigError
from registry.http import running
from registry.logs import skipped
from registry.topology import Topology
from resolver import sockets
from resolver.geo import Locator
from resolver.geoip import GeoIP
from resolver.metrics import ResolverCollector
from resolver.respond import Options, Responder
from resolver.rrl import RrlConfig
from resolver.server import TcpServer, UdpServer
from resolver.settings import ResolverSettings
from resolver.snapshot import Snapshot
from resolver.sync import Follower
from resolver.zone import Zone

log = structlog.get_logger("resolver")


@dataclass(frozen=True)
class Bound:
    dns_port: int
    http_port: int


def build_responder(settings: ResolverSettings, topology: Topology) -> Responder:
    zone = Zone(
        name=settings.zone,
        ttl=settings.ttl,
        negative_ttl=settings.negative_ttl,
        nameservers=dict(settings.nameservers),
    )
    geoip = GeoIP(settings.geoip_database).lookup if settings.geoip_database else None
    locator = Locator(
        ((n.cidr, n.region, n.cluster) for n in topology.networks),
        topology.default_region,
        geoip=geoip,
        regions=topology.regions,
    )
    secret = settings.cookie_secret.encode() if settings.cookie_secret else secrets.token_bytes(16)
    rrl = None
    if settings.rrl_rate > 0:
        rrl = RrlConfig(
            rate=settings.rrl_rate,
            window=settings.rrl_window_s,
            slip=settings.rrl_slip,
            log_only=settings.rrl_log_only,
            exempt=settings.rrl_exempt,
        )
    options = Options(
        nsid=settings.nsid.encode() if settings.nsid else None,
        ecs_trusted=settings.ecs_trusted,
        cookie_secret=secret,
        rrl=rrl,
        tcp_keepalive_s=settings.tcp_idle_timeout_s,
        explain_trusted=settings.explain_trusted,
    )
    return Responder(zone, locator, topology.regions, options, latency=topology.latency)


def stale(
    age_s: float | None, bound_s: float | None, error: str | None, *, redis_out: bool = False
) -> str | None:
    """Why the snapshot is too old for this resolver to call itself ready (None: it is
    not). ``error``: why the last attempt to read the registry failed, if it did.

    Not while Redis itself is out (``redis_out``, a control-plane outage): every resolver
    shares that, and readiness decides which of them a Kubernetes Service sends queries
    to — all of them unready would turn a registry outage into a DNS outage, while each
    still answers from its last picture. Stale while Redis answers means this resolver's
    sync is broken, and the others can serve instead."""
    if bound_s is None or age_s is None or age_s <= bound_s or redis_out:
        return None
    why = error or "no sync has settled since"
    return (
        f"the snapshot is {age_s:.1f}s old, over the {bound_s:g}s bound ({why}); "
        "DNS still answers from it"
    )


def http_app(
    responder: Responder,
    follower: Follower,
    propagation: Histogram | None = None,
    *,
    admin: Tokens | None = None,
    max_snapshot_age_s: float | None = None,
) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        snap = responder.snapshot
        if not snap.loaded:
            return web.json_response({"status": "waiting for the first load"}, status=503)
        age = follower.age_s()
        redis_out = follower.redis_out
        reason = stale(age, max_snapshot_age_s, follower.last_error, redis_out=redis_out)
        if reason is None and redis_out:
            body = {
                "status": "ready",
                "serving": "the last snapshot: Redis is unreachable",
                "snapshot_age_s": None if age is None else round(age, 3),
                "generation": snap.generation,
            }
            return web.json_response(body)
        if reason is not None:
            body = {
                "status": "stale",
                "reason": reason,
                "snapshot_age_s": None if age is None else round(age, 3),
                "max_snapshot_age_s": max_snapshot_age_s,
                "generation": snap.generation,
            }
            return web.json_response(body, status=503)
        return web.json_response({"status": "ready", "generation": snap.generation})

    async def status(request: web.Request) -> web.Response:
        snap = responder.snapshot
        age = follower.age_s()
        return web.json_response(
            {
                "generation": snap.generation,
                "services": len(snap.services),
                "clusters": sorted(snap.clusters),
                "live_clusters": sorted(snap.live),
                "last_sync_age_s": round(age, 3) if age is not None else None,
                "sync_errors": follower.errors,
                "sync_restarts": follower.failures,
                "last_sync_error": follower.last_error,
                "bad_records": dict(follower.store.bad_records.counts),
                "reconciles": follower.reconciles,
                "policy_conflicts": len(follower.state.conflicts),
                "records_not_granted": len(follower.state.not_granted),
                "control_plane_outages": [
                    {"cause": o.cause, "since_ms": o.start_ms} for o in follower.control.ongoing
                ],
                "stats": dict(responder.stats),
            }
        )

    registry = CollectorRegistry()
    registry.register(ResolverCollector(responder, follower))
    if propagation is not None:
        registry.register(propagation)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    tokens = admin or Tokens()

    async def explain(request: web.Request) -> web.Response:
        """A trace names what is unhealthy and where: the caller's own, from a source in
        GLOBALDNS_EXPLAIN_TRUSTED; another client's (``client=``, ``subnet=``) only with
        the admin token (the registry's /v1/explain passes the operator's on)."""
        name = request.query.get("name", "")
        qtype = request.query.get("type", "A").upper()
        remote = request.remote or ""
        asked = request.query.get("client")
        if (asked is not None and asked != remote) or request.query.get("subnet"):
            if not tokens.admin:
                return web.json_response(
                    {
                        "error": "explaining another client needs the admin token, and this "
                        "resolver has none (GLOBALDNS_ADMIN_TOKEN)"
                    },
                    status=403,
                )
            if not tokens.is_admin(bearer(request.headers.get("Authorization", ""))):
                return web.json_response(
                    {"error": "explaining another client needs the admin bearer token"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="globaldns"'},
                )
        elif not responder.may_explain(remote):
            return web.json_response(
                {"error": f"{remote} is not in GLOBALDNS_EXPLAIN_TRUSTED"}, status=403
            )
        client = asked or remote
        if not name:
            return web.json_response({"error": "name= is required"}, status=400)
        types = {"A": 1, "AAAA": 28}
        if qtype not in types:
            return web.json_response({"error": "type= is A or AAAA"}, status=400)
        try:
            ipaddress.ip_address(client)
        except ValueError:
            return web.json_response({"error": f"client={client!r} is not an address"}, status=400)
        subnet = request.query.get("subnet") or None
        try:
            return web.json_response(responder.explain(name, types[qtype], client, subnet))
        except (ValueError, UnicodeEncodeError) as exc:
            return web.json_response({"error": f"name={name!r}: {exc}"}, status=400)

    app = web.Application()
    app.router.add_get("/v1/explain", explain)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/v1/status", status)
    return app


PROBLEMS = (
    "formerr",
    "notimp",
    "dropped",
    "internal_error",
    "truncated",
    "tcp_refused",
    "tcp_evicted",
    "tcp_write_timeout",
)


async def report_problems(responder: Responder, stop: asyncio.Event, every: float = 10.0) -> None:
    """Log bad input as periodic counts, never a line per packet (a log-flood vector)."""
    seen: dict[str, int] = {}
    last_error = None
    while not await sleep_or_stop(stop, every):
        counts = {k: responder.stats[k] - seen.get(k, 0) for k in PROBLEMS}
        if responder.limiter is not None:
            counts.update(responder.limiter.stats)
        counts = {k: v for k, v in counts.items() if v}
        seen = {k: responder.stats[k] for k in PROBLEMS}
        if counts:
            log.info("unusual queries in the last interval", interval_s=every, **counts)
        if responder.last_error is not None and responder.last_error != last_error:
            last_error = responder.last_error
            log.error("query handling failed; answered SERVFAIL", error=last_error)


async def serve(
    settings: ResolverSettings,
    *,
    stop: asyncio.Event,
    topology: Topology | None = None,
    started: Callable[[Bound], None] | None = None,
) -> None:
    topology = topology or topology_mod.load(settings.topology)
    try:
        admin = Tokens.from_config({}, [t.get_secret_value() for t in settings.admin_token])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    responder = build_responder(settings, topology)
    where = connection.target(settings.redis_url, settings)
    client = store_mod.connect(where, read_from=settings.redis_read_from)

    def publish(snapshot: Snapshot) -> None:
        responder.swap(snapshot)
        log.info(
            "first snapshot loaded",
            generation=snapshot.generation,
            services=len(snapshot.services),
            live=sorted(snapshot.live),
        )

    propagation = Histogram(
        "globaldns_propagation_seconds",
        "from an agent observing a change to this resolver answering with it "
        "(agent and resolver wall clocks)",
        buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30),
        registry=None,
    )
    follower = Follower(
        store_mod.Store(client, on_bad=skipped(log, "resolver")),
        lease_ttl_ms=int(settings.lease_ttl_s * 1000),
        publish=publish,
        invalidate=responder.invalidate,
        resync_interval_s=settings.resync_interval_s,
        observe_propagation=propagation.observe,
        expect_clusters=bool(topology.clusters),
        clusters=[c.name for c in topology.clusters],
        mass_expiry_fraction=settings.mass_expiry_fraction,
        grants=topology.grants(),
    )

    def sync_failed(error: Exception, wait_s: float) -> None:
        follower.failed(error)
        log.error(
            "resolver sync failed; answering from the snapshot and starting it again",
            error=f"{type(error).__name__}: {error}",
            at=_where(error),
            retry_in_s=round(wait_s, 3),
            failures=follower.failures,
        )

    udp_sock, tcp_sock = sockets.pair(settings.dns_host, settings.dns_port)
    udp = UdpServer(udp_sock, responder)
    tcp = TcpServer.configured(responder, settings)
    await tcp.start(tcp_sock)
    sync = asyncio.create_task(
        supervise(follower.run, stop, on_failure=sync_failed), name="resolver-sync"
    )
    reporter = asyncio.create_task(report_problems(responder, stop), name="resolver-problems")
    try:
        app = http_app(
            responder,
            follower,
            propagation,
            admin=admin,
            max_snapshot_age_s=settings.snapshot_age_bound_s,
        )
        async with running(app, settings.http_host, settings.http_port) as http_port:
            bound = Bound(udp_sock.getsockname()[1], http_port)
            log.info(
                "resolver listening",
                host=settings.dns_host,
                dns_port=bound.dns_port,
                http_port=http_port,
                zone=settings.zone,
                redis=connection.describe(where),
                read_from=settings.redis_read_from,
            )
            if started is not None:
                started(bound)
            await stop.wait()
    finally:
        sync.cancel()
        reporter.cancel()
        await asyncio.gather(sync, reporter, return_exceptions=True)
        udp.close()
        await tcp.close()
        await client.aclose()
        log.info("resolver stopped")


def _where(error: BaseException) -> str:
    """Where ``error`` was raised, as ``file:line in function`` (one line, no traceback)."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    where = "/".join(last.filename.split("/")[-2:])
    return f"{where}:{last.lineno} in {last.name}"
