"""The ``globaldns`` command.

::

    globaldns dev [options]              the whole system locally (make dev)
    globaldns dev outage|recover CLUSTER stop / restart a dev cluster's endpoints
    globaldns drain CLUSTER [--reason R] take a cluster out of the answers (admin)
    globaldns undrain CLUSTER            bring it back
    globaldns registry | resolver | agent   run one component, configured by GLOBALDNS_* env

Signals are handled here and nowhere else: they set the stop event every component's
``serve`` waits on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from registry import logs
from registry.errors import ConfigError


def _run(main: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    async def wrapper() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        import uvloop

        uvloop.run(wrapper())
    except ImportError:
        asyncio.run(wrapper())
    return 0


def _dev_state(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _http(method: str, url: str, token: str | None, body: dict[str, Any] | None = None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            print(response.read().decode())
            return 0
    except urllib.error.HTTPError as exc:
        print(f"{method} {url}: {exc.code}: {exc.read().decode()}", file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"{method} {url}: {exc.reason} (is the registry running?)", file=sys.stderr)
        return 1


def _admin(args: argparse.Namespace) -> tuple[str, str | None]:
    state = _dev_state(args.state_file)
    url = os.environ.get("GLOBALDNS_API_URL") or state.get("api_url") or "http://127.0.0.1:8080"
    token = os.environ.get("GLOBALDNS_ADMIN_TOKEN") or state.get("admin_token")
    return url.rstrip("/"), token


def cmd_drain(args: argparse.Namespace) -> int:
    url, token = _admin(args)
    body = {"reason": args.reason, "by": args.by}
    return _http("POST", f"{url}/v1/clusters/{args.cluster}/drain", token, body)


def cmd_undrain(args: argparse.Namespace) -> int:
    url, token = _admin(args)
    return _http("DELETE", f"{url}/v1/clusters/{args.cluster}/drain", token)


def cmd_dev(args: argparse.Namespace) -> int:
    if args.action:
        if not args.cluster:
            print(f"usage: globaldns dev {args.action} CLUSTER", file=sys.stderr)
            return 2
        state = _dev_state(args.state_file)
        if "control_url" not in state:
            print(f"no dev mode is running (no {args.state_file})", file=sys.stderr)
            return 1
        return _http("POST", f"{state['control_url']}/dev/{args.action}/{args.cluster}", None)

    from globaldns.dev import DevOptions, run

    logs.configure(json=False, level=args.log_level)
    options = DevOptions(
        topology=args.topology,
        host=args.host,
        api_port=args.api_port,
        dns_port=args.dns_port,
        resolver_http_port=args.resolver_http_port,
        control_port=args.control_port,
        state_file=args.state_file,
        redis_url=os.environ.get("REDIS_URL") or None,
    )
    return _run(lambda stop: run(options, stop))


def cmd_registry(args: argparse.Namespace) -> int:
    from registry.server import serve
    from registry.settings import RegistrySettings

    settings = RegistrySettings()
    logs.configure(json=settings.log_json, level=args.log_level)
    return _run(lambda stop: serve(settings, stop=stop))


def cmd_resolver(args: argparse.Namespace) -> int:
    from resolver.main import serve
    from resolver.settings import ResolverSettings

    settings = ResolverSettings()
    logs.configure(json=settings.log_json, level=args.log_level)
    return _run(lambda stop: serve(settings, stop=stop))


def cmd_agent(args: argparse.Namespace) -> int:
    import aiohttp

    from agents import static
    from agents.agent import Agent
    from agents.reporter import RegistryClient
    from agents.settings import AgentSettings

    settings = AgentSettings()  # fields come from the environment
    logs.configure(json=settings.log_json, level=args.log_level)
    source = static.load(settings.source)

    async def main(stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as session:
            client = RegistryClient(
                session, settings.registry_url, settings.token.get_secret_value()
            )
            agent = Agent(
                cluster=settings.cluster,
                source=source,
                client=client,
                heartbeat_interval_s=settings.heartbeat_interval_s,
            )
            await agent.run(stop)

    return _run(main)


def parser() -> argparse.ArgumentParser:
    from globaldns.dev import DEFAULT_STATE_FILE

    top = argparse.ArgumentParser(prog="globaldns", description=__doc__.split("\n\n")[0])
    top.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    top.add_argument(
        "--state-file",
        type=Path,
        default=DEFAULT_STATE_FILE,
        help="where dev mode writes its URLs and admin token (default: %(default)s)",
    )
    sub = top.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run the whole system locally")
    dev.add_argument("action", nargs="?", choices=["outage", "recover"])
    dev.add_argument("cluster", nargs="?")
    dev.add_argument("--topology", type=Path, default=Path("deploy/examples/topology.yaml"))
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--api-port", type=int, default=8080)
    dev.add_argument("--dns-port", type=int, default=5353)
    dev.add_argument("--resolver-http-port", type=int, default=8053)
    dev.add_argument("--control-port", type=int, default=8079)
    dev.set_defaults(func=cmd_dev)

    drain = sub.add_parser("drain", help="take a cluster out of the answers")
    drain.add_argument("cluster")
    drain.add_argument("--reason", default="", help="why (shown in the registry and status)")
    drain.add_argument("--by", default=os.environ.get("USER", ""), help="who (default: $USER)")
    drain.set_defaults(func=cmd_drain)

    undrain = sub.add_parser("undrain", help="bring a drained cluster back")
    undrain.add_argument("cluster")
    undrain.set_defaults(func=cmd_undrain)

    for name, func in (
        ("registry", cmd_registry),
        ("resolver", cmd_resolver),
        ("agent", cmd_agent),
    ):
        sub.add_parser(name, help=f"run the {name} (GLOBALDNS_* settings)").set_defaults(func=func)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, ValidationError) as exc:
        print(f"globaldns: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
