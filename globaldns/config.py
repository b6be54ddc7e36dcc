"""What an operator sees of the settings: `--help` listing every ``GLOBALDNS_*`` variable
with its default, one-line explanations of a bad setting, a port in use or an unreachable
Redis (never a traceback), and ``globaldns config check``.

Every component reads one pydantic-settings object (``registry/settings.py``,
``resolver/settings.py``, ``agents/settings.py``); this module only reads their fields,
so a new setting shows up here by itself.
"""

from __future__ import annotations

import asyncio
import errno
import re
import textwrap
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings

from registry import topology as topology_mod
from registry.errors import ConfigError, StoreError

PREFIX = "GLOBALDNS_"


def variable(cls: type[BaseSettings], field: str) -> str:
    info = cls.model_fields[field]
    alias = info.validation_alias
    choices = getattr(alias, "choices", None)
    if choices:
        return " or ".join(str(c) for c in choices)
    return PREFIX + field.upper()


def _default(cls: type[BaseSettings], field: str) -> str:
    info = cls.model_fields[field]
    if info.is_required():
        return "required"
    value: Any = info.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, dict | list | tuple):
        import json

        return json.dumps(value if not isinstance(value, tuple) else list(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def settings_help(cls: type[BaseSettings]) -> str:
    """Every setting: its variable, default and description, for argparse's epilog."""
    lines = ["settings (environment variables):"]
    for field, info in cls.model_fields.items():
        lines.append(f"  {variable(cls, field)}  (default: {_default(cls, field)})")
        if info.description:
            lines.extend(
                textwrap.wrap(
                    info.description, 84, initial_indent=" " * 6, subsequent_indent=" " * 6
                )
            )
    return "\n".join(lines)


def describe_settings(exc: ValidationError, cls: type[BaseSettings]) -> str:
    """One line naming every variable that is wrong, what it held and how to fix it."""
    parts = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        if field in cls.model_fields:
            name = variable(cls, field)
            if error["type"] == "missing":
                parts.append(f"{name} is required ({cls.model_fields[field].description})")
                continue
            shown = "(secret)" if "token" in field else repr(error.get("input"))
            parts.append(
                f"{name}={shown}: {error['msg']}; fix it or unset it "
                f"(default: {_default(cls, field)})"
            )
        else:
            parts.append(f"{error['msg']}")
    return "; ".join(parts)


def redacted(url: str) -> str:
    """A Redis URL with its password replaced, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def describe_os_error(exc: OSError, ports: dict[int, str]) -> str | None:
    """A listening socket that could not be had, as one line naming the setting; None
    for other OS errors."""
    if exc.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
        return None
    # resolver/sockets.py puts "host:port" in filename; aiohttp says "('host', port)".
    text = str(exc.filename or "") + " " + str(exc)
    found = re.search(r"'[^']*',\s*(\d{1,5})\)|:(\d{1,5})\b", text)
    port = int(next(g for g in found.groups() if g)) if found else None
    setting = ports.get(port) if port is not None else None
    where = f"port {port}" if port is not None else "a port"
    name = f" ({setting})" if setting else ""
    if exc.errno == errno.EADDRINUSE:
        why = f"{where}{name} is in use by another program"
        if port == 5353:
            why += " (often mDNS: avahi-daemon or systemd-resolved)"
    elif exc.errno == errno.EACCES:
        why = f"{where}{name} needs privileges (ports under 1024)"
    else:
        why = f"{where}{name}: the address is not on this machine"
    fix = f"choose another with {setting}=PORT" if setting else "choose another port"
    return f"{why}: {fix}"


async def redis_problem(url: str, *, timeout: float = 2.0) -> str | None:
    """None when Redis at ``url`` answers PING, else why not (one line)."""
    from registry import store as store_mod

    try:
        client = store_mod.connect(url, timeout=timeout)
    except ValueError as exc:
        return f"GLOBALDNS_REDIS_URL={redacted(url)} is not a Redis URL: {exc}"
    try:
        await store_mod.Store(client).ping()
    except StoreError as exc:
        return (
            f"Redis at GLOBALDNS_REDIS_URL={redacted(url)} is unreachable ({exc}): start it "
            "or point GLOBALDNS_REDIS_URL at it"
        )
    finally:
        await client.aclose()
    return None


def check(components: list[str], *, topology: Path | None, redis: bool) -> list[tuple[bool, str]]:
    """``globaldns config check``: (ok, line) per thing checked, from the environment."""
    from agents.settings import AgentSettings
    from registry import server as registry_server
    from registry.settings import RegistrySettings
    from resolver.settings import ResolverSettings

    classes: dict[str, type[BaseSettings]] = {
        "registry": RegistrySettings,
        "resolver": ResolverSettings,
        "agent": AgentSettings,
    }
    results: list[tuple[bool, str]] = []
    loaded: dict[Path, topology_mod.Topology | None] = {}

    def load(path: Path) -> topology_mod.Topology | None:
        if path not in loaded:
            try:
                found = topology_mod.load(path)
            except ConfigError as exc:
                results.append((False, f"topology: {exc}"))
                loaded[path] = None
                return None
            results.append(
                (
                    True,
                    f"topology {path}: {len(found.regions)} regions, "
                    f"{len(found.clusters)} clusters, {len(found.networks)} networks",
                )
            )
            loaded[path] = found
        return loaded[path]

    for component in components:
        cls = classes[component]
        try:
            settings: Any = cls()
        except ValidationError as exc:
            results.append((False, f"{component}: {describe_settings(exc, cls)}"))
            continue
        results.append((True, f"{component}: settings valid"))
        path = topology or getattr(settings, "topology", None)
        found = load(path) if path is not None else None
        if component == "registry" and found is not None:
            try:
                registry_server.check(settings, found)
            except ConfigError as exc:
                results.append((False, f"registry: {exc}"))
            for warning in registry_server.warnings(settings, found):
                results.append((True, f"registry: warning: {warning}"))
        geoip = getattr(settings, "geoip_database", None)
        if component == "resolver" and geoip is not None and not geoip.is_file():
            results.append((False, f"resolver: GLOBALDNS_GEOIP_DATABASE={geoip}: no such file"))
        if component == "agent" and not settings.source.is_file():
            results.append((False, f"agent: GLOBALDNS_SOURCE={settings.source}: no such file"))
        url = getattr(settings, "redis_url", None)
        if redis and url is not None:
            problem = asyncio.run(redis_problem(url))
            results.append(
                (
                    problem is None,
                    f"{component}: " + (problem or f"Redis at {redacted(url)} answers"),
                )
            )
    if topology is not None and not components:
        load(topology)
    return results


def run_checked(work: Callable[[], int], ports: dict[int, str]) -> int:
    """Run a component; a listening port it cannot have becomes one line, exit 1."""
    import sys

    try:
        return work()
    except OSError as exc:
        line = describe_os_error(exc, ports)
        if line is None:
            raise
        print(f"globaldns: {line}", file=sys.stderr)
        return 1
