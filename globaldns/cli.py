"""The ``globaldns`` command.

::

    globaldns dev [options]              the whole system locally (make dev)
    globaldns dev outage|recover CLUSTER stop / restart a dev cluster's endpoints
    globaldns drain CLUSTER|--region R [--reason R] [--dry-run] [--force]   (admin)
    globaldns undrain CLUSTER|--region R bring it back
    globaldns status                     clusters, leases, drains, services at a glance
    globaldns explain NAME --client IP   why that client gets its answer
    globaldns policy set|clear NS/NAME [JSON]   override a service's policy (admin)
    globaldns registry | resolver | agent   run one component, configured by GLOBALDNS_* env
    globaldns export-zone [--region R] [--output FILE]   the registry as a zone file
    globaldns token new | hash           a token and the sha256: hash settings hold
    globaldns config check [registry|resolver|agent] [--topology F] [--no-redis]
                                         validate settings, topology and Redis first

Signals are handled here and nowhere else: they set the stop event every component's
``serve`` waits on.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import signal
import stat
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from globaldns import config, show
from globaldns.state import DEFAULT_STATE_FILE
from registry import logs
from registry import topology as topology_mod
from registry.errors import ConfigError
from registry.topology import describe


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


class CallFailed(Exception):
    pass


def _call(
    method: str, url: str, token: str | None = None, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    """The status and JSON body of an API call; CallFailed when nothing answered."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"error": raw.decode(errors="replace")}
    except urllib.error.URLError as exc:
        raise CallFailed(f"{method} {url}: {exc.reason} (is it running?)") from exc


def _http(method: str, url: str, token: str | None, body: dict[str, Any] | None = None) -> int:
    """Call and print the JSON answer (or the error) as it came."""
    status, payload = _call(method, url, token, body)
    if status >= 400:
        print(f"{method} {url}: {status}: {payload.get('error', payload)}", file=sys.stderr)
        return 1
    print(json.dumps(payload, indent=2))
    return 0


def _private_file(path: Path) -> bool:
    """Whether ``path`` is a regular file that only this user can read or write."""
    try:
        info = path.stat()
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077


def _admin(args: argparse.Namespace) -> tuple[str, str | None]:
    """The registry's URL and the admin token to send it.

    The token comes from ``GLOBALDNS_ADMIN_TOKEN``, or the file ``GLOBALDNS_ADMIN_TOKEN_FILE``
    names (owned by this user, mode 0600), and goes to ``GLOBALDNS_API_URL``. Without
    either, a running dev mode's state file (also this user's, 0600) gives both — and
    only a loopback URL, so a planted state file cannot send a token elsewhere.
    """
    url = os.environ.get("GLOBALDNS_API_URL")
    token = os.environ.get("GLOBALDNS_ADMIN_TOKEN") or None
    token_file = os.environ.get("GLOBALDNS_ADMIN_TOKEN_FILE")
    if token is None and token_file:
        path = Path(token_file)
        if not _private_file(path):
            raise ConfigError(
                f"GLOBALDNS_ADMIN_TOKEN_FILE: {path} must be a file of yours with mode 0600"
            )
        token = path.read_text().strip() or None
    if url is None and token is None and _private_file(args.state_file):
        state = _dev_state(args.state_file)
        dev_url = str(state.get("api_url") or "")
        if _loopback(dev_url):
            return dev_url.rstrip("/"), state.get("admin_token")
    return (url or "http://127.0.0.1:8080").rstrip("/"), token


def _loopback(url: str) -> bool:
    try:
        host = urllib.parse.urlsplit(url).hostname or ""
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _drain_path(args: argparse.Namespace) -> str:
    if args.region:
        return f"/v1/regions/{args.region}/drain"
    if not args.cluster:
        raise SystemExit("name a CLUSTER or --region REGION")
    return f"/v1/clusters/{args.cluster}/drain"


def cmd_drain(args: argparse.Namespace) -> int:
    url, token = _admin(args)
    body = {"reason": args.reason, "by": args.by, "dry_run": args.dry_run, "force": args.force}
    status, payload = _call("POST", url + _drain_path(args), token, body)
    target = args.region or args.cluster
    if status == 409:
        print(f"refused: {payload['error']}", file=sys.stderr)
        print(show.impact(payload), file=sys.stderr)
        return 1
    if status >= 400:
        print(f"drain {target}: {status}: {payload.get('error', payload)}", file=sys.stderr)
        return 1
    verb = "would drain" if args.dry_run else "drained"
    print(f"{verb} {', '.join(payload['clusters'])}")
    print(show.impact(payload))
    return 0


def cmd_undrain(args: argparse.Namespace) -> int:
    url, token = _admin(args)
    status, payload = _call("DELETE", url + _drain_path(args), token)
    if status >= 400:
        print(f"undrain: {status}: {payload.get('error', payload)}", file=sys.stderr)
        return 1
    print(f"active again: {', '.join(payload['clusters'])}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    url, token = _admin(args)
    parts = [
        _call("GET", f"{url}{path}", token)
        for path in ("/v1/clusters", "/v1/drains", "/v1/services")
    ]
    failed = [payload for status, payload in parts if status >= 400]
    if failed:
        print(f"status: {failed[0].get('error', failed[0])}", file=sys.stderr)
        return 1
    print(show.status(parts[0][1], parts[1][1], parts[2][1]))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    url, token = _admin(args)
    query = urllib.parse.urlencode(
        {
            k: v
            for k, v in {
                "name": args.name,
                "type": args.type,
                "client": args.client,
                "subnet": args.subnet,
            }.items()
            if v
        }
    )
    status, payload = _call("GET", f"{url}/v1/explain?{query}", token)
    if status >= 400:
        print(f"explain: {status}: {payload.get('error', payload)}", file=sys.stderr)
        return 1
    print(json.dumps(payload, indent=2) if args.json else show.explain(payload))
    return 0


def cmd_policy(args: argparse.Namespace) -> int:
    url, token = _admin(args)
    path = f"{url}/v1/services/{args.service}/policy"
    if args.action == "clear":
        return _http("DELETE", path, token)
    try:
        policy = json.loads(args.policy or "")
    except ValueError as exc:
        print(f"policy: the policy must be JSON: {exc}", file=sys.stderr)
        return 2
    return _http("PUT", path, token, {"policy": policy, "reason": args.reason, "by": args.by})


def cmd_token(args: argparse.Namespace) -> int:
    from registry import auth

    if args.token_action == "new":
        token = auth.new()
        print(f"token: {token}")
        print(f"hash:  {auth.hashed(token)}")
        print("Give the token to its holder (a Secret); put the hash in the registry's settings.")
        return 0
    token = sys.stdin.readline().strip()
    if not token:
        print("globaldns token hash: give the token on standard input", file=sys.stderr)
        return 2
    print(auth.hashed(token))
    return 0


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


S = TypeVar("S", bound=BaseSettings)


def _settings(cls: type[S]) -> S:
    """The component's settings from the environment; a bad one is a ConfigError naming
    the variable (one line), never pydantic's multi-line report."""
    try:
        return cls()
    except ValidationError as exc:
        raise ConfigError(config.describe_settings(exc, cls)) from exc


def _redis_warning(component: str, url: str) -> Callable[[], Awaitable[None]]:
    async def warn() -> None:
        problem = await config.redis_problem(url)
        if problem is not None:
            print(
                f"globaldns {component}: {problem}; starting anyway, /readyz answers 503 "
                "until it answers",
                file=sys.stderr,
            )

    return warn


def cmd_registry(args: argparse.Namespace) -> int:
    from registry.server import serve
    from registry.settings import RegistrySettings

    settings = _settings(RegistrySettings)
    logs.configure(json=settings.log_json, level=args.log_level)
    warn = _redis_warning("registry", settings.redis_url)

    async def main(stop: asyncio.Event) -> None:
        await warn()
        await serve(settings, stop=stop)

    return config.run_checked(lambda: _run(main), {settings.port: "GLOBALDNS_PORT"})


def cmd_resolver(args: argparse.Namespace) -> int:
    from resolver.main import serve
    from resolver.settings import ResolverSettings

    settings = _settings(ResolverSettings)
    logs.configure(json=settings.log_json, level=args.log_level)
    warn = _redis_warning("resolver", settings.redis_url)

    async def main(stop: asyncio.Event) -> None:
        await warn()
        await serve(settings, stop=stop)

    ports = {settings.http_port: "GLOBALDNS_HTTP_PORT", settings.dns_port: "GLOBALDNS_DNS_PORT"}
    return config.run_checked(lambda: _run(main), ports)


def cmd_config(args: argparse.Namespace) -> int:
    components = args.components or ["registry", "resolver"]
    unknown = set(components) - {"registry", "resolver", "agent"}
    if unknown:
        print(
            f"globaldns config check: no component {', '.join(sorted(unknown))} "
            "(registry, resolver, agent)",
            file=sys.stderr,
        )
        return 2
    results = config.check(components, topology=args.topology, redis=not args.no_redis)
    for ok, line in results:
        print(f"{'ok  ' if ok else 'FAIL'} {line}")
    return 0 if all(ok for ok, _ in results) else 2


def cmd_export_zone(args: argparse.Namespace) -> int:
    from registry.errors import StoreError
    from resolver.export import export, write
    from resolver.settings import ResolverSettings

    try:
        text = asyncio.run(export(_settings(ResolverSettings), region=args.region))
    except StoreError as exc:
        print(f"globaldns export-zone: registry unreachable: {exc}", file=sys.stderr)
        return 1
    if args.output is None:
        sys.stdout.write(text)
    else:
        write(args.output, text)
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    import aiohttp

    from agents import static
    from agents.agent import Agent
    from agents.reporter import RegistryClient
    from agents.settings import AgentSettings
    from registry.http import client_tls

    settings = _settings(AgentSettings)  # fields come from the environment
    logs.configure(json=settings.log_json, level=args.log_level)
    source = static.load(settings.source)

    async def main(stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as session:
            client = RegistryClient(
                session,
                settings.registry_url,
                settings.token.get_secret_value(),
                timeout_s=settings.registry_timeout_s,
                tls=client_tls(settings.registry_ca_file),
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
    dev.add_argument("--topology", type=Path, default=topology_mod.default_path())
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--api-port", type=int, default=8080)
    dev.add_argument("--dns-port", type=int, default=5353)
    dev.add_argument("--resolver-http-port", type=int, default=8053)
    dev.add_argument("--control-port", type=int, default=8079)
    dev.set_defaults(func=cmd_dev)

    who = os.environ.get("USER", "")
    drain = sub.add_parser("drain", help="take a cluster (or a region) out of the answers")
    drain.add_argument("cluster", nargs="?")
    drain.add_argument("--region", help="drain every cluster of this region")
    drain.add_argument("--reason", default="", help="why (shown in the registry and status)")
    drain.add_argument("--by", default=who, help="who (default: $USER)")
    drain.add_argument("--dry-run", action="store_true", help="show the impact, change nothing")
    drain.add_argument(
        "--force", action="store_true", help="drain even the last healthy cluster of a service"
    )
    drain.set_defaults(func=cmd_drain)

    undrain = sub.add_parser("undrain", help="bring a drained cluster (or region) back")
    undrain.add_argument("cluster", nargs="?")
    undrain.add_argument("--region", help="undrain every cluster of this region")
    undrain.set_defaults(func=cmd_undrain)

    status = sub.add_parser("status", help="clusters, leases, drains and services at a glance")
    status.set_defaults(func=cmd_status)

    explain = sub.add_parser("explain", help="why a client gets the answer it gets")
    explain.add_argument("name")
    explain.add_argument("--type", default="A", choices=["A", "AAAA"])
    explain.add_argument("--client", help="the client's address (default: this machine)")
    explain.add_argument("--subnet", help="as if the query carried this client subnet")
    explain.add_argument("--json", action="store_true", help="the raw trace")
    explain.set_defaults(func=cmd_explain)

    policy = sub.add_parser("policy", help="override a service's routing policy (admin)")
    policy.add_argument("action", choices=["set", "clear"])
    policy.add_argument("service", help="NAMESPACE/NAME")
    policy.add_argument(
        "policy",
        nargs="?",
        help='JSON, e.g. \'{"kind": "failover", "order": ["eu-west-prod", "us-east-1"]}\'',
    )
    policy.add_argument("--reason", default="")
    policy.add_argument("--by", default=who)
    policy.set_defaults(func=cmd_policy)

    export_zone = sub.add_parser(
        "export-zone", help="write the registry as an RFC 1035 zone file (GLOBALDNS_* settings)"
    )
    export_zone.add_argument(
        "--region", help="answer services as to a client in this region (default: topology's)"
    )
    export_zone.add_argument("--output", type=Path, help="write here instead of stdout")
    export_zone.set_defaults(func=cmd_export_zone)

    from agents.settings import AgentSettings
    from registry.settings import RegistrySettings
    from resolver.settings import ResolverSettings

    for name, func, cls in (
        ("registry", cmd_registry, RegistrySettings),
        ("resolver", cmd_resolver, ResolverSettings),
        ("agent", cmd_agent, AgentSettings),
    ):
        sub.add_parser(
            name,
            help=f"run the {name} (GLOBALDNS_* settings)",
            description=f"Run the {name}, configured by the environment.",
            epilog=config.settings_help(cls),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        ).set_defaults(func=func)

    token = sub.add_parser(
        "token", help="make a registry token and the hash its settings hold (globaldns token new)"
    )
    token.add_argument(
        "token_action",
        choices=["new", "hash"],
        help="new: a random token and its hash; hash: the hash of a token read from stdin",
    )
    token.set_defaults(func=cmd_token)

    conf = sub.add_parser(
        "config", help="check settings and topology before starting (globaldns config check)"
    )
    conf_sub = conf.add_subparsers(dest="config_action", required=True)
    conf_check = conf_sub.add_parser(
        "check",
        help="validate the GLOBALDNS_* settings, the topology and Redis; exit 2 on a problem",
    )
    conf_check.add_argument(
        "components",
        nargs="*",
        metavar="registry|resolver|agent",
        help="which components' settings to check (default: registry resolver)",
    )
    conf_check.add_argument(
        "--topology", type=Path, help="check this topology file instead of GLOBALDNS_TOPOLOGY"
    )
    conf_check.add_argument("--no-redis", action="store_true", help="do not try to reach Redis")
    conf_check.set_defaults(func=cmd_config)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"globaldns: configuration error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"globaldns: configuration error: {describe(exc)}", file=sys.stderr)
        return 2
    except CallFailed as exc:
        print(f"globaldns: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
