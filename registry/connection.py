"""Where Redis is and how every component reaches it: one server, or a Sentinel service.

Two forms, chosen by the URL (``GLOBALDNS_REDIS_URL``) or by the separate settings:

* **One server**: ``redis://[user:pass@]host:port/db`` (also ``rediss://``, ``unix://``),
  parsed by redis-py itself.
* **Redis Sentinel**: ``redis+sentinel://[user:pass@]host[:port][,host[:port]...]/service[/db]``
  (``?sentinel_username=…&sentinel_password=…`` for Sentinels that require a login). The
  hosts are the Sentinels (port 26379 unless given), ``service`` is the name they monitor
  (``sentinel monitor <service> …``), the user and password are the *Redis* ones. This is
  the spelling of redis-sentinel-url, redisvl and prefect; redis-py has Sentinel support
  but no URL for it. ``GLOBALDNS_REDIS_SENTINELS`` (``host:port,host:port``),
  ``GLOBALDNS_REDIS_SERVICE`` and ``GLOBALDNS_REDIS_DB`` say the same without a URL, and
  ``GLOBALDNS_REDIS_USERNAME`` / ``_PASSWORD`` and ``GLOBALDNS_REDIS_SENTINEL_USERNAME`` /
  ``_PASSWORD`` keep the credentials out of it (they win over the URL's).

With Sentinel, the client is redis-py's own (``redis.asyncio.sentinel``): built once per
process (``master_for`` makes a new pool per call, redis-py #3433), it asks the Sentinels
for the primary on every (re)connect, and turns a READONLY reply from a demoted primary
into a reconnect. Connection retries stay at one: with a retry policy a
``SentinelManagedConnection`` retries the *old* address before asking again (redis-py
#3560), so a larger one would keep writing to a primary that came back after a failover.
Readers that may (the resolver) connect to a replica (``slave_for``), which falls back to
another replica, then to the primary, when theirs dies.

Bad settings leave here as one :class:`registry.errors.ConfigError` line naming the
setting, never as a redis-py traceback.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, unquote

import redis.asyncio as aioredis
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from registry.errors import ConfigError

SENTINEL_SCHEME = "redis+sentinel://"
SENTINEL_PORT = 26379
URL_FORMAT = "redis+sentinel://[user:pass@]host[:port][,host[:port]...]/service[/db]"
ReadFrom = Literal["primary", "replica"]


class RedisOptions(BaseSettings):
    """The Redis settings every component shares, besides its ``redis_url``."""

    redis_sentinels: str = Field(
        default="",
        description="Sentinel addresses, host:port,host:port (port 26379 if left out); set: "
        "connect through Sentinel to GLOBALDNS_REDIS_SERVICE instead of GLOBALDNS_REDIS_URL",
    )
    redis_service: str = Field(
        default="",
        description="the service (master) name the Sentinels monitor; with REDIS_SENTINELS",
    )
    redis_db: int = Field(default=0, ge=0, description="database number, with REDIS_SENTINELS")
    redis_username: str | None = Field(
        default=None, description="Redis ACL user (wins over the URL's); Sentinel or not"
    )
    redis_password: SecretStr | None = Field(
        default=None, description="Redis password (wins over the URL's); Sentinel or not"
    )
    redis_sentinel_username: str | None = Field(
        default=None, description="user for the Sentinels themselves, when they require one"
    )
    redis_sentinel_password: SecretStr | None = Field(
        default=None, description="password for the Sentinels themselves, when they require one"
    )


@dataclass(frozen=True, slots=True)
class Server:
    """One Redis server, as redis-py's URL parser understood it."""

    url: str
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True, slots=True)
class SentinelService:
    """A primary (and its replicas) found through Sentinel."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None


Target = Server | SentinelService


def describe(target: Target) -> str:
    """For logs: where, without the passwords."""
    if isinstance(target, Server):
        return _redact(target.url)
    hosts = ",".join(f"{h}:{p}" for h, p in target.sentinels)
    return f"{SENTINEL_SCHEME}{hosts}/{target.service}/{target.db}"


def _redact(url: str) -> str:
    url, query, _ = url.partition("?")
    url += "?…" if query else ""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hosts = rest.rpartition("@")
    if not at:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{hosts}"


def parse(url: str, *, setting: str = "GLOBALDNS_REDIS_URL") -> Target:
    """A Redis URL, either form; :class:`ConfigError` naming ``setting`` when it is wrong."""
    if url.lower().startswith(SENTINEL_SCHEME):
        return _parse_sentinel(url, setting)
    if "+sentinel://" in url.lower():
        scheme = url.partition("://")[0]
        raise ConfigError(f"{setting}: {scheme}:// is not supported; use {URL_FORMAT}")
    try:
        parse_url(url)
    except ValueError as exc:
        raise ConfigError(
            f"{setting}: {_redact(url)!r}: {exc}, or {URL_FORMAT} for Sentinel"
        ) from None
    return Server(url)


def _parse_sentinel(url: str, setting: str) -> SentinelService:
    def bad(why: str) -> ConfigError:
        return ConfigError(f"{setting}: {_redact(url)!r}: {why} (expected {URL_FORMAT})")

    rest, _, query = url[len(SENTINEL_SCHEME) :].partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = parse_sentinels(hosts, setting=setting, url=url)
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise bad("no service name after the Sentinel addresses")
    if len(parts) > 2:
        raise bad("too many path parts")
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise bad(f"db {parts[1]!r} is not a number")
        db = int(parts[1])
    options = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    unknown = sorted(set(options) - {"sentinel_username", "sentinel_password"})
    if unknown:
        raise bad(f"unknown option {unknown[0]!r} (sentinel_username, sentinel_password)")
    return SentinelService(
        sentinels=sentinels,
        service=unquote(parts[0]),
        db=db,
        username=username,
        password=password,
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
    )


def parse_sentinels(
    text: str, *, setting: str = "GLOBALDNS_REDIS_SENTINELS", url: str | None = None
) -> tuple[tuple[str, int], ...]:
    """``host[:port],host[:port]`` (``[v6]:port`` too) as (host, port) pairs."""
    shown = _redact(url) if url is not None else text
    out: list[tuple[str, int]] = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        if item.startswith("["):
            host, _, after = item[1:].partition("]")
            port_text = after[1:] if after.startswith(":") else after
        else:
            host, _, port_text = item.partition(":") if item.count(":") == 1 else (item, "", "")
        if not host or (port_text and not port_text.isdigit()):
            raise ConfigError(f"{setting}: {shown!r}: {item!r} is not host:port")
        port = int(port_text) if port_text else SENTINEL_PORT
        if not 0 < port < 65536:
            raise ConfigError(f"{setting}: {shown!r}: port {port} is out of range")
        out.append((host, port))
    if not out:
        raise ConfigError(f"{setting}: {shown!r}: no Sentinel address (host:port,host:port)")
    return tuple(out)


def target(url: str, options: RedisOptions | None = None) -> Target:
    """Where a component's settings say Redis is: the URL, or the separate Sentinel
    settings when ``redis_sentinels`` is set; the separate credentials win."""
    if options is not None and options.redis_sentinels.strip():
        if not options.redis_service:
            raise ConfigError(
                "GLOBALDNS_REDIS_SERVICE: required with GLOBALDNS_REDIS_SENTINELS "
                "(the name after 'sentinel monitor')"
            )
        found: Target = SentinelService(
            sentinels=parse_sentinels(options.redis_sentinels),
            service=options.redis_service,
            db=options.redis_db,
        )
    else:
        found = parse(url)
    if options is None:
        return found
    creds: dict[str, Any] = {}
    if options.redis_username is not None:
        creds["username"] = options.redis_username
    if options.redis_password is not None:
        creds["password"] = options.redis_password.get_secret_value()
    if isinstance(found, SentinelService):
        if options.redis_sentinel_username is not None:
            creds["sentinel_username"] = options.redis_sentinel_username
        if options.redis_sentinel_password is not None:
            creds["sentinel_password"] = options.redis_sentinel_password.get_secret_value()
    return dataclasses.replace(found, **creds)


class SentinelRedis(aioredis.Redis):
    """A ``master_for``/``slave_for`` client that also closes the Sentinel clients."""

    owned_sentinel: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            if self.owned_sentinel is not None:
                await self.owned_sentinel.aclose()


def client(
    where: Target, *, timeout: float = 2.0, read_from: ReadFrom = "primary"
) -> aioredis.Redis:
    """A client whose every call fails fast instead of hanging on a dead server.

    ``timeout`` bounds connecting and each reply. ``read_from="replica"`` reads from a
    replica when Sentinel knows one (only a reader may ask; with one server it is moot).
    """
    common: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 10,
        # One quick retry on a fresh connection: after a Redis restart every pooled
        # connection is dead, and the first command on each would fail otherwise. Kept
        # small so that a Sentinel client re-asks for the primary soon (redis-py #3560).
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
        "retry_on_error": [RedisConnectionError],
    }
    if isinstance(where, Server):
        for name in ("username", "password"):
            if getattr(where, name) is not None:
                common[name] = getattr(where, name)
        return aioredis.Redis.from_url(where.url, **common)
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
    }
    if where.sentinel_username is not None:
        sentinel_kwargs["username"] = where.sentinel_username
    if where.sentinel_password is not None:
        sentinel_kwargs["password"] = where.sentinel_password
    sentinel = Sentinel(list(where.sentinels), sentinel_kwargs=sentinel_kwargs)
    pick = sentinel.slave_for if read_from == "replica" else sentinel.master_for
    made: SentinelRedis = pick(
        where.service,
        redis_class=SentinelRedis,
        db=where.db,
        username=where.username,
        password=where.password,
        **common,
    )
    made.owned_sentinel = sentinel
    return made
