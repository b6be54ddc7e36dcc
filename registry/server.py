"""The registry API process: startup, serve until told to stop, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from registry import connection
from registry import store as store_mod
from registry import topology as topology_mod
from registry.api import build_app
from registry.errors import ConfigError
from registry.http import running
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
    tokens = [t.get_secret_value() for t in settings.cluster_tokens.values()]
    if any(len(t) < 16 for t in tokens):
        raise ConfigError("GLOBALDNS_CLUSTER_TOKENS: every token needs at least 16 characters")
    if len(set(tokens)) != len(tokens):
        raise ConfigError("GLOBALDNS_CLUSTER_TOKENS: two clusters share a token")


def warnings(settings: RegistrySettings, topology: Topology) -> list[str]:
    """Settings that work but are probably not what was meant, one line each."""
    if not settings.cluster_tokens:
        return [
            "GLOBALDNS_CLUSTER_TOKENS is empty: every agent report will be refused (401); "
            'set it to {"<cluster>": "<token>", ...} for the clusters of the topology'
        ]
    missing = [c.name for c in topology.clusters if c.name not in settings.cluster_tokens]
    if missing:
        return [
            f"GLOBALDNS_CLUSTER_TOKENS has no token for {', '.join(missing)}: "
            "their agents cannot report"
        ]
    return []


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
        async with running(app, settings.host, settings.port) as port:
            log.info(
                "registry API listening",
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
