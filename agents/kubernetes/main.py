"""Running the Kubernetes agent: compose the source, the agent and the HTTP endpoints.

``serve`` is the lifecycle in named steps (connect → start → run until ``stop`` → release
leadership → close), with the stop trigger injected: signals are turned into ``stop`` at
the process edge (:mod:`agents.kubernetes.__main__`), and tests set it themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agents.agent import Agent
from agents.kubernetes.informer import WatchSettings
from agents.kubernetes.kubeconfig import api_client
from agents.kubernetes.metrics import AgentCollector
from agents.kubernetes.settings import KubernetesAgentSettings
from agents.kubernetes.source import KubernetesSource
from agents.reporter import RegistryClient
from registry.http import client_tls

log = structlog.get_logger("agents.kubernetes")


def http_app(agent: Agent, source: KubernetesSource) -> web.Application:
    registry = CollectorRegistry()
    registry.register(AgentCollector(agent, source))

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        if not source.ready():
            return web.json_response({"status": "syncing"}, status=503)
        return web.json_response({"status": "ready", "leader": source.reporting()})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


@contextlib.asynccontextmanager
async def _http(app: web.Application, host: str, port: int) -> AsyncIterator[int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server: Any = site._server
    try:
        yield int(server.sockets[0].getsockname()[1]) if server and server.sockets else port
    finally:
        await runner.cleanup()


async def serve(
    settings: KubernetesAgentSettings,
    *,
    stop: asyncio.Event,
    started: Callable[[Agent], None] | None = None,
) -> None:
    bound = structlog.contextvars.bound_contextvars(
        cluster=settings.cluster, region=settings.region, node=settings.node_name
    )
    with bound:
        client = await api_client(kubeconfig=settings.kubeconfig)
        async with client, aiohttp.ClientSession() as session:
            source = KubernetesSource(
                client,
                node=settings.node_name,
                identity=settings.pod_name,
                pod_uid=settings.pod_uid,
                namespace=settings.namespace,
                export_selector=settings.export_selector,
                watch=WatchSettings(
                    page_size=settings.list_page_size,
                    timeout_s=settings.watch_timeout_s,
                    read_timeout_s=settings.read_timeout_s,
                ),
                leader_lease_s=settings.leader_lease_s,
                leader_renew_s=settings.leader_renew_s,
                leader_deadline_s=settings.leader_deadline_s,
                node_lease_s=settings.node_lease_s,
                outage_grace_s=settings.apiserver_outage_grace_s,
            )
            agent = Agent(
                cluster=settings.cluster,
                source=source,
                client=RegistryClient(
                    session,
                    settings.registry_url,
                    settings.token.get_secret_value(),
                    tls=client_tls(settings.registry_ca_file),
                ),
                heartbeat_interval_s=settings.heartbeat_interval_s,
            )
            async with _http(http_app(agent, source), settings.http_host, settings.http_port):
                log.info("kubernetes agent started", namespace=settings.namespace)
                tasks = [
                    asyncio.create_task(source.run(stop), name="source"),
                    asyncio.create_task(agent.run(stop), name="agent"),
                ]
                if started is not None:
                    started(agent)
                try:
                    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                    for task in done:
                        task.result()
                finally:
                    stop.set()
                    await asyncio.gather(*tasks, return_exceptions=True)
            log.info("kubernetes agent stopped")
