"""The only code that reads or writes Redis.

Writers (the registry API) replace a cluster's whole report in one MULTI transaction that
also bumps the generation and appends a change-stream entry, so a reader that sees the
entry sees the records. Readers (the API's views and the resolver) take a consistent
picture with an optimistic read: read everything, then check that the generation did not
move meanwhile.

Times come from the Redis server's clock (``TIME``), never from the caller's, so leases
written by several registry replicas and judged by several resolvers agree.

Every Redis failure leaves this module as :class:`registry.errors.StoreError`; nothing
past here sees a redis-py exception or a raw reply.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, WatchError

from registry import keys
from registry.errors import StaleReport, StoreError
from registry.model import (
    ClusterState,
    Drain,
    PolicyOverride,
    RegistryView,
    Report,
    Service,
)

T = TypeVar("T")

_MAX_OPTIMISTIC_TRIES = 20


@dataclass(frozen=True, slots=True)
class Change:
    """One change-stream entry: which cluster changed, and how."""

    id: str
    cluster: str
    kind: str


@dataclass(frozen=True, slots=True)
class Leases:
    """Every cluster's lease, read in one round trip with the server's time."""

    now_ms: int
    generation: int
    last_seen_ms: Mapping[str, int]


def connect(url: str, *, timeout: float = 2.0) -> aioredis.Redis:
    """A client whose every call fails fast instead of hanging on a dead server."""
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=10,
        # One quick retry on a fresh connection: after a Redis restart every pooled
        # connection is dead, and the first command on each would fail otherwise. Kept
        # small so that a Sentinel client re-asks for the primary soon (redis-py #3560).
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
        retry_on_error=[RedisConnectionError],
    )


class Store:
    def __init__(self, redis: aioredis.Redis) -> None:
        # redis-py's stubs type every reply as bytes | str | Awaitable[...]; the store is
        # the fence where replies become models, so it handles them as Any.
        self.redis: Any = redis

    async def _call(self, work: Callable[[], Awaitable[T]]) -> T:
        try:
            return await work()
        except RedisError as exc:
            raise StoreError(f"redis: {exc.__class__.__name__}: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"redis: {exc}") from exc

    async def ping(self) -> bool:
        return bool(await self._call(self.redis.ping))

    async def time_ms(self) -> int:
        seconds, micros = await self._call(self.redis.time)
        return int(seconds) * 1000 + int(micros) // 1000

    # -- writes ---------------------------------------------------------------------

    async def write_report(self, cluster: str, region: str, report: Report) -> int:
        """Replace ``cluster``'s records with ``report``; returns the new generation.

        Raises :class:`StaleReport` when a newer report is already stored.
        """
        records = {service.key: service.model_dump_json() for service in report.services}

        async def work() -> int:
            for _ in range(_MAX_OPTIMISTIC_TRIES):
                async with self.redis.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(keys.cluster(cluster))
                        stored = await pipe.hget(keys.cluster(cluster), "seq")
                        if stored is not None and int(stored) > report.seq:
                            raise StaleReport(int(stored), report.seq)
                        now_ms = await self.time_ms()
                        pipe.multi()
                        pipe.delete(keys.services(cluster))
                        if records:
                            pipe.hset(keys.services(cluster), mapping=records)
                        pipe.hset(
                            keys.cluster(cluster),
                            mapping={"region": region, "seq": report.seq, "last_seen_ms": now_ms},
                        )
                        pipe.sadd(keys.CLUSTERS, cluster)
                        pipe.incr(keys.GENERATION)
                        _append_change(pipe, cluster, "report")
                        result = await pipe.execute()
                        return int(result[-2])
                    except WatchError:
                        continue
            raise StoreError(f"cluster {cluster}: too many concurrent writers")

        return await self._call(work)

    async def heartbeat(self, cluster: str, seq: int) -> bool:
        """Renew ``cluster``'s lease if the registry holds the report ``seq``.

        Returns False when it does not (Redis restarted empty, failed over and lost the
        tail, or the agent never reported): the agent must send its whole state again.
        """

        async def work() -> bool:
            stored = await self.redis.hget(keys.cluster(cluster), "seq")
            if stored is None or int(stored) != seq:
                return False
            now_ms = await self.time_ms()
            await self.redis.hset(keys.cluster(cluster), "last_seen_ms", now_ms)
            return True

        return await self._call(work)

    async def set_drain(self, cluster: str, drain: Drain) -> int:
        async def work() -> int:
            at = drain.model_copy(update={"at_ms": await self.time_ms()})
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(keys.DRAINS, cluster, at.model_dump_json())
                pipe.incr(keys.GENERATION)
                _append_change(pipe, cluster, "drain")
                result = await pipe.execute()
            return int(result[1])

        return await self._call(work)

    async def clear_drain(self, cluster: str) -> bool:
        """Returns whether there was a drain to clear."""

        async def work() -> bool:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hdel(keys.DRAINS, cluster)
                pipe.incr(keys.GENERATION)
                _append_change(pipe, cluster, "undrain")
                result = await pipe.execute()
            return bool(result[0])

        return await self._call(work)

    async def set_policy(self, service: str, override: PolicyOverride) -> int:
        async def work() -> int:
            stamped = override.model_copy(update={"at_ms": await self.time_ms()})
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(keys.POLICIES, service, stamped.model_dump_json())
                pipe.incr(keys.GENERATION)
                _append_change(pipe, "", "policy")
                result = await pipe.execute()
            return int(result[1])

        return await self._call(work)

    async def clear_policy(self, service: str) -> bool:
        async def work() -> bool:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hdel(keys.POLICIES, service)
                pipe.incr(keys.GENERATION)
                _append_change(pipe, "", "policy")
                result = await pipe.execute()
            return bool(result[0])

        return await self._call(work)

    async def policies(self) -> dict[str, PolicyOverride]:
        async def work() -> dict[str, PolicyOverride]:
            return _policies(await self.redis.hgetall(keys.POLICIES))

        return await self._call(work)

    # -- reads ----------------------------------------------------------------------

    async def view(self) -> RegistryView:
        """A consistent picture of every cluster, and the stream position it matches."""

        async def work() -> RegistryView:
            for _ in range(_MAX_OPTIMISTIC_TRIES):
                generation = int(await self.redis.get(keys.GENERATION) or 0)
                names: list[str] = sorted(await self.redis.smembers(keys.CLUSTERS))
                async with self.redis.pipeline(transaction=False) as pipe:
                    for name in names:
                        pipe.hgetall(keys.cluster(name))
                        pipe.hgetall(keys.services(name))
                    pipe.hgetall(keys.POLICIES)
                    pipe.hgetall(keys.DRAINS)
                    pipe.xrevrange(keys.CHANGES, count=1)
                    pipe.time()
                    pipe.get(keys.GENERATION)
                    replies: list[Any] = await pipe.execute()
                if int(replies[-1] or 0) != generation:
                    continue
                policies = _policies(replies[-5])
                drains = _drains(replies[-4])
                last = replies[-3]
                seconds, micros = replies[-2]
                clusters = tuple(
                    _cluster(name, replies[2 * i], replies[2 * i + 1], drains.get(name))
                    for i, name in enumerate(names)
                )
                return RegistryView(
                    generation=generation,
                    now_ms=int(seconds) * 1000 + int(micros) // 1000,
                    clusters=clusters,
                    stream_id=last[0][0] if last else "0-0",
                    policies=policies,
                )
            raise StoreError("registry changes too fast for a consistent read")

        return await self._call(work)

    async def cluster(self, name: str) -> ClusterState | None:
        """One cluster's current state (None when it never reported)."""

        async def work() -> ClusterState | None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(keys.cluster(name))
                pipe.hgetall(keys.services(name))
                pipe.hget(keys.DRAINS, name)
                meta, records, drain = await pipe.execute()
            if not meta:
                return None
            return _cluster(name, meta, records, _drain(drain) if drain else None)

        return await self._call(work)

    async def drains(self) -> dict[str, Drain]:
        async def work() -> dict[str, Drain]:
            raw: dict[str, str] = await self.redis.hgetall(keys.DRAINS)
            return _drains(raw)

        return await self._call(work)

    async def leases(self) -> Leases:
        async def work() -> Leases:
            names: list[str] = sorted(await self.redis.smembers(keys.CLUSTERS))
            async with self.redis.pipeline(transaction=True) as pipe:
                for name in names:
                    pipe.hget(keys.cluster(name), "last_seen_ms")
                pipe.get(keys.GENERATION)
                pipe.time()
                replies: list[Any] = await pipe.execute()
            seconds, micros = replies[-1]
            return Leases(
                now_ms=int(seconds) * 1000 + int(micros) // 1000,
                generation=int(replies[-2] or 0),
                last_seen_ms={n: int(v or 0) for n, v in zip(names, replies[:-2], strict=True)},
            )

        return await self._call(work)

    async def changes(self, after: str, *, block_ms: int) -> list[Change]:
        """Stream entries after ``after``, waiting up to ``block_ms`` for the first."""

        async def work() -> list[Change]:
            reply: Any = await self.redis.xread({keys.CHANGES: after}, block=block_ms, count=1000)
            out: list[Change] = []
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    out.append(Change(entry_id, fields.get("cluster", ""), fields.get("kind", "")))
            return out

        return await self._call(work)


def _append_change(pipe: Any, cluster: str, kind: str) -> None:
    pipe.xadd(
        keys.CHANGES,
        {"cluster": cluster, "kind": kind},
        maxlen=keys.STREAM_MAXLEN,
        approximate=True,
    )


def _cluster(
    name: str, meta: Mapping[str, str], records: Mapping[str, str], drain: Drain | None
) -> ClusterState:
    services = []
    for key in sorted(records):
        try:
            services.append(Service.model_validate_json(records[key]))
        except ValidationError:
            # A record this version cannot read is skipped, not fatal: the next report
            # from its cluster replaces it.
            continue
    return ClusterState(
        name=name,
        region=meta.get("region", "unknown"),
        seq=int(meta.get("seq", 0)),
        last_seen_ms=int(meta.get("last_seen_ms", 0)),
        services=tuple(services),
        drain=drain,
    )


def _drain(raw: str) -> Drain | None:
    try:
        return Drain.model_validate_json(raw)
    except ValidationError:
        return Drain(reason="(unreadable drain record)")


def _policies(raw: Mapping[str, str]) -> dict[str, PolicyOverride]:
    out = {}
    for key, value in raw.items():
        try:
            out[key] = PolicyOverride.model_validate_json(value)
        except ValidationError:
            continue  # unreadable by this version: the annotations apply instead
    return out


def _drains(raw: Mapping[str, str]) -> dict[str, Drain]:
    return {name: d for name, value in raw.items() if (d := _drain(value)) is not None}


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[Store]:
    client = connect(url)
    try:
        yield Store(client)
    finally:
        await client.aclose()
