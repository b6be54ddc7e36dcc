"""The registry API process: startup, serve until told to stop, shutdown."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

import structlog

from registry import auth, connection
from registry import store as store_mod
from registry import topology as topology_mod
from registry.api import METRICS, build_app
from registry.errors import ConfigError
from registry.http import running, server_tls
from registry.httpguard import Guard, GuardCollector
from registry.logs import skipped
from registry.settings import RegistrySettings
from registry.topology import Topology

log = structlog.get_logger("registry")


def check(settings: RegistrySettings, topology: Topology) -> None:
    """Refuse settings that could never work, naming the field."""
    if len(topology.clusters) > settings.max_clusters:
        raise ConfigError(
            f"{settings.topology}: {len(topology.clusters)} clusters is over "
            f"GLOBALDNS_MAX_CLUSTERS ({settings.max_clusters})"
        )
    for cluster in settings.cluster_tokens:
        if topology.region_of(cluster) is None:
            raise ConfigError(
                f"GLOBALDNS_CLUSTER_TOKENS: cluster {cluster!r} is not in {settings.topology}"
            )
    try:
        settings.tokens()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if (settings.tls_cert_file is None) != (settings.tls_key_file is None):
        raise ConfigError("GLOBALDNS_TLS_CERT_FILE and GLOBALDNS_TLS_KEY_FILE go together")


def warnings(settings: RegistrySettings, topology: Topology) -> list[str]:
    """Settings that work but are probably not what was meant, one line each."""
    if not settings.cluster_tokens:
        return [
            "GLOBALDNS_CLUSTER_TOKENS is empty: every agent report will be refused (401); "
            'set it to {"<cluster>": "<token>", ...} for the clusters of the topology'
        ]
    found = []
    missing = [c.name for c in topology.clusters if c.name not in settings.cluster_tokens]
    if missing:
        found.append(
            f"GLOBALDNS_CLUSTER_TOKENS has no token for {', '.join(missing)}: "
            "their agents cannot report"
        )
    plain = [
        name
        for name, values in [
            *((f"GLOBALDNS_CLUSTER_TOKENS[{c}]", ts) for c, ts in settings.cluster_tokens.items()),
            ("GLOBALDNS_ADMIN_TOKEN", settings.admin_token),
            ("GLOBALDNS_READ_TOKEN", settings.read_token),
        ]
        if any(not v.get_secret_value().startswith(auth.PREFIX) for v in values)
    ]
    if plain:
        found.append(
            f"{', '.join(plain)}: stored as plain tokens; store their hashes instead "
            "(sha256:<hex>, printed by `globaldns token hash`)"
        )
    return found


async def serve(
    settings: RegistrySettings,
    *,
    stop: asyncio.Event,
    topology: Topology | None = None,
    started: Callable[[int], None] | None = None,
) -> None:
    topology = topology or topology_mod.load(settings.topology)
    check(settings, topology)
    for warning in warnings(settings, topology):
        log.warning(warning)
    where = connection.target(settings.redis_url, settings)
    client = store_mod.connect(where, timeout=settings.redis_timeout_s)
    store = store_mod.Store(
        client, deadline_s=settings.redis_timeout_s, on_bad=skipped(log, "registry")
    )
    try:
        app = build_app(settings, topology, store)
        tls = None
        if settings.tls_cert_file is not None and settings.tls_key_file is not None:
            try:
                tls = server_tls(settings.tls_cert_file, settings.tls_key_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"GLOBALDNS_TLS_CERT_FILE / _KEY_FILE: {exc}") from exc
        guard = Guard(settings.connection_limits())
        app[METRICS].registry.register(GuardCollector(guard, "globaldns_registry"))
        async with running(app, settings.host, settings.port, tls=tls, guard=guard) as port:
            log.info(
                "registry API listening",
                scheme="https" if tls else "http",
                host=settings.host,
                port=port,
                redis=connection.describe(where),
            )
            if started is not None:
                started(port)
            await stop.wait()
    finally:
        await store.settle()
        await client.aclose()
        log.info("registry API stopped")
