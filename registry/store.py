"""The only code that reads or writes Redis.

Writers (the registry API) apply a report — a cluster's whole state or a delta — with one
pipelined read and one Lua script that writes only if the cluster's seq is still the one
read (compare and set). Only services whose content hash differs from the stored one are
written; the same script bumps the generation and appends a change-stream entry naming
those services, so a reader that sees the entry sees the records, and a report that
changes nothing announces nothing.

Readers: the API's views take a consistent picture of everything with an optimistic read
(read, then check that the generation did not move). The resolver reads per cluster and
per service (digests, then only the records whose digest it lacks) and relies on the
change stream for consistency: an entry means "read these again".

Times come from the Redis server's clock (``TIME``), never from the caller's, so leases
written by several registry replicas and judged by several resolvers agree.

Every Redis failure leaves this module as :class:`registry.errors.StoreError`; nothing
past here sees a redis-py exception or a raw reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError

from registry import connection, keys
from registry.connection import ReadFrom, Target
from registry.decisions import Decision, drain_subject, policy_subject
from registry.errors import LimitExceeded, NeedResync, StaleReport, StoreError
from registry.model import (
    ClusterState,
    Drain,
    PolicyOverride,
    RegistryView,
    Report,
    content_hash,
    read_service,
)
from registry.records import ServiceRecord, compact

T = TypeVar("T")

_MAX_OPTIMISTIC_TRIES = 20


_WRITE_CHUNK = 1000
"""Fields per HSET/HDEL inside a transaction (one huge command would stall Redis)."""
_READ_CHUNK = 100
"""Records per HMGET when a reader fetches services (each is parsed as it arrives)."""


@dataclass(frozen=True, slots=True)
class Change:
    """One change-stream entry: which cluster changed, how, and which services."""

    id: str
    cluster: str
    kind: str
    keys: tuple[str, ...] = ()
    observed_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Written:
    """What a report did: the new generation and how many services it wrote or removed."""

    generation: int
    changed: int
    removed: int


@dataclass(frozen=True, slots=True)
class Decided:
    """What an operator decision did: the decision as stored, the new generation,
    whether its subject had a value before, and whether it was applied (a restore
    over a newer revision is not)."""

    decision: Decision
    generation: int
    existed: bool
    applied: bool = True


@dataclass(frozen=True, slots=True)
class Meta:
    """A cluster's region, the seq of the report held, and its lease (Redis ms)."""

    region: str
    seq: int
    last_seen_ms: int
    total: str = ""
    """:func:`combined` digest of every service the cluster holds ("" = not known)."""


@dataclass(frozen=True, slots=True)
class Leases:
    """Every cluster's lease, read in one round trip with the server's time."""

    now_ms: int
    generation: int
    last_seen_ms: Mapping[str, int]
    registry_alive_ms: int | None = None
    """When a registry replica last said it was taking heartbeats (None: none ever has)."""


def connect(
    where: str | Target, *, timeout: float = 2.0, read_from: ReadFrom = "primary"
) -> aioredis.Redis:
    """A client whose every call fails fast instead of hanging on a dead server.

    ``where`` is a URL (``redis://``, or ``redis+sentinel://`` for a Sentinel service) or
    a :data:`registry.connection.Target` built from the settings; see
    :mod:`registry.connection`.
    """
    found = connection.parse(where) if isinstance(where, str) else where
    return connection.client(found, timeout=timeout, read_from=read_from)


class Store:
    def __init__(self, redis: aioredis.Redis, *, deadline_s: float | None = None) -> None:
        # redis-py's stubs type every reply as bytes | str | Awaitable[...]; the store is
        # the fence where replies become models, so it handles them as Any.
        self.redis: Any = redis
        self._write = self.redis.register_script(_WRITE_REPORT)
        self._beacon = self.redis.register_script(_BEACON)
        self._decide_script = self.redis.register_script(_DECIDE)
        self._inflight: set[asyncio.Future[Any]] = set()
        self.deadline_s = deadline_s
        """Longest one store call may take, connecting and retries included (None: only
        the client's socket timeouts bound it). The registry API sets it so that a frozen
        Redis costs a request this long, then a 503."""

    async def _call(self, work: Callable[[], Awaitable[T]], *, blocking_s: float = 0.0) -> T:
        # NOREPLICAS (an isolated old primary refusing writes), READONLY (a demoted one)
        # and MasterNotFoundError (Sentinel mid-failover) are RedisErrors like any other:
        # the API answers 503 and the agent sends again, so nothing is accepted and lost.
        limit = None if self.deadline_s is None else self.deadline_s + blocking_s
        try:
            if limit is None:
                return await work()
            # Past the deadline the caller gets its answer, but the call itself is left to
            # finish (its socket timeouts bound it): cancelling redis-py in the middle of
            # connecting or of asking a Sentinel leaks the connection it was making.
            call = asyncio.ensure_future(work())
            self._inflight.add(call)
            call.add_done_callback(self._settled)
            done, _ = await asyncio.wait({call}, timeout=limit)
            if not done:
                raise TimeoutError
            return call.result()
        except TimeoutError as exc:
            within = "" if limit is None else f" within {limit:g}s"
            raise StoreError(f"redis: no answer{within}") from exc
        except RedisError as exc:
            raise StoreError(f"redis: {exc.__class__.__name__}: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"redis: {exc}") from exc

    def _settled(self, call: asyncio.Future[Any]) -> None:
        self._inflight.discard(call)
        if not call.cancelled():
            call.exception()  # retrieved: a late failure was already answered as a 503

    async def settle(self) -> None:
        """Wait for calls that outlived their deadline (before closing the client)."""
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=10)

    async def ping(self) -> bool:
        return bool(await self._call(self.redis.ping))

    async def time_ms(self) -> int:
        seconds, micros = await self._call(self.redis.time)
        return int(seconds) * 1000 + int(micros) // 1000

    # -- writes ---------------------------------------------------------------------

    async def write_report(
        self,
        cluster: str,
        region: str,
        report: Report,
        *,
        max_services: int | None = None,
        digests: Mapping[str, str] | None = None,
    ) -> Written:
        """Apply ``report`` (whole state or delta) to ``cluster``'s records.

        Raises :class:`StaleReport` when a newer report is already stored,
        :class:`NeedResync` when a delta does not build on the stored report, and
        :class:`LimitExceeded` when the cluster would hold more than ``max_services``.
        """
        if digests is None:
            digests = {service.key: content_hash(service) for service in report.services}
        by_key = {service.key: service for service in report.services}
        meta_key, digest_key = keys.cluster(cluster), keys.digests(cluster)

        async def work() -> Written:
            for _ in range(_MAX_OPTIMISTIC_TRIES):
                # One round trip to read what the report is compared with ...
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.hmget(meta_key, ["seq", "total"])
                    if report.base_seq is None:
                        pipe.hgetall(digest_key)
                    else:
                        asked = [*digests, *report.removed]
                        pipe.hmget(digest_key, asked or ["-"])
                        pipe.hlen(digest_key)
                    replies = await pipe.execute()
                (stored_raw, total_raw), found = replies[0], replies[1]
                stored = _int_or_none(stored_raw)
                if stored is not None and stored > report.seq:
                    raise StaleReport(stored, report.seq)
                if report.base_seq is not None and stored != report.base_seq:
                    raise NeedResync(stored, report.base_seq)
                if report.base_seq is None:
                    held: dict[str, str] = found
                    removed = sorted(set(held) - set(digests))
                    size = len(digests)
                else:
                    held = {k: v for k, v in zip(asked, found, strict=False) if v}
                    removed = sorted(k for k in report.removed if k in held)
                    added = sum(1 for k in digests if k not in held)
                    size = int(replies[2]) + added - len(removed)
                if max_services is not None and size > max_services:
                    raise LimitExceeded("services per cluster", size, max_services)
                changed = sorted(k for k, d in digests.items() if held.get(k) != d)
                if report.base_seq is None:
                    total = combined(digests.values())
                elif total_raw:
                    touched = [*changed, *removed]
                    total = _xor_hex(
                        total_raw,
                        combined(held[k] for k in touched if k in held),
                        combined(digests[k] for k in changed),
                    )
                else:
                    total = ""  # unknown until the next whole state
                # ... and one to write it, if the seq read is still the one stored.
                args: list[Any] = [
                    stored_raw or "",
                    report.seq,
                    region,
                    total,
                    len(changed),
                    len(removed),
                ]
                for key in changed:
                    args += [key, digests[key], by_key[key].model_dump_json()]
                args += removed
                args += _announcement(cluster, [*changed, *removed], report.observed_ms)
                generation = await self._write(
                    keys=[
                        meta_key,
                        keys.services(cluster),
                        digest_key,
                        keys.CLUSTERS,
                        keys.GENERATION,
                        keys.CHANGES,
                    ],
                    args=[cluster, keys.STREAM_MAXLEN, *args],
                )
                if int(generation) >= 0:
                    return Written(int(generation), len(changed), len(removed))
            raise StoreError(f"cluster {cluster}: too many concurrent writers")

        return await self._call(work)

    async def beacon(self) -> None:
        """Say that this registry is taking heartbeats, in Redis time (once a second)."""
        await self._call(lambda: self._beacon(keys=[keys.REGISTRY]))

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

    async def set_drain(self, cluster: str, drain: Drain) -> Decided:
        stamped = drain.model_copy(update={"at_ms": await self.time_ms()})
        return await self._decide(drain_subject(cluster), stamped.model_dump_json())

    async def clear_drain(self, cluster: str) -> Decided:
        return await self._decide(drain_subject(cluster), None)

    async def set_policy(self, service: str, override: PolicyOverride) -> Decided:
        stamped = override.model_copy(update={"at_ms": await self.time_ms()})
        return await self._decide(policy_subject(service), stamped.model_dump_json())

    async def clear_policy(self, service: str) -> Decided:
        return await self._decide(policy_subject(service), None)

    async def restore(self, decisions: Iterable[Decision]) -> list[Decision]:
        """Write back decisions Redis lost, each only if Redis holds nothing newer for its
        subject; returns those written."""
        written = []
        for decision in decisions:
            done = await self._decide(decision.subject, decision.value, rev=decision.rev)
            if done.applied:
                written.append(decision)
        return written

    async def _decide(self, subject: str, value: str | None, *, rev: int = 0) -> Decided:
        """One decision in one script: the value, its revision, the generation and a
        change-stream entry. ``rev`` 0: a new decision (Redis time, above every revision
        held); else a restored one, applied only over an older revision."""
        kind, _, target = subject.partition(":")
        if kind == "drain":
            where, stream = (
                keys.DRAINS,
                ["cluster", target, "kind", "drain" if value else "undrain"],
            )
        else:
            where, stream = keys.POLICIES, ["cluster", "", "kind", "policy", "keys", target]

        async def work() -> Decided:
            reply = await self._decide_script(
                keys=[keys.DECISIONS, where, keys.DECISIONS_REV, keys.GENERATION, keys.CHANGES],
                args=[subject, target, value or "", rev, keys.STREAM_MAXLEN, *stream],
            )
            applied, made, generation, existed = (int(x) for x in reply)
            return Decided(Decision(subject, made, value), generation, bool(existed), bool(applied))

        return await self._call(work)

    async def decisions_rev(self) -> int:
        """The newest revision of any decision Redis holds (0: none)."""
        return _int(await self._call(lambda: self.redis.get(keys.DECISIONS_REV)))

    async def decisions(self) -> dict[str, Decision]:
        """Every decision Redis holds, cleared ones included, by subject."""

        async def work() -> dict[str, Decision]:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(keys.DECISIONS)
                pipe.hgetall(keys.DRAINS)
                pipe.hgetall(keys.POLICIES)
                revs, drains, policies = await pipe.execute()
            return _decisions(revs, drains, policies)

        return await self._call(work)

    async def decision(self, subject: str) -> Decision:
        """One subject's decision (rev 0 and no value: Redis holds none)."""
        kind, _, target = subject.partition(":")
        where = keys.DRAINS if kind == "drain" else keys.POLICIES

        async def work() -> Decision:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hget(keys.DECISIONS, subject)
                pipe.hget(where, target)
                rev, value = await pipe.execute()
            return Decision(subject, _int(rev), value)

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

    async def leases(self, names: Iterable[str] | None = None) -> Leases:
        """Every cluster's lease (or those of ``names``: one round trip instead of two,
        for a reader that already knows the clusters), with the generation and the time."""

        async def work() -> Leases:
            known = sorted(names) if names is not None else None
            asked = known if known is not None else sorted(await self.redis.smembers(keys.CLUSTERS))
            async with self.redis.pipeline(transaction=True) as pipe:
                for name in asked:
                    pipe.hget(keys.cluster(name), "last_seen_ms")
                pipe.hget(keys.REGISTRY, "alive_ms")
                pipe.get(keys.GENERATION)
                pipe.time()
                replies: list[Any] = await pipe.execute()
            seconds, micros = replies[-1]
            return Leases(
                now_ms=int(seconds) * 1000 + int(micros) // 1000,
                generation=_int(replies[-2]),
                last_seen_ms={
                    n: _int(v) for n, v in zip(asked, replies[:-3], strict=True) if v is not None
                },
                registry_alive_ms=_int_or_none(replies[-3]),
            )

        return await self._call(work)

    async def metas(self) -> tuple[int, dict[str, Meta]]:
        """Every cluster's region, seq and lease, and the generation they go with."""

        async def work() -> tuple[int, dict[str, Meta]]:
            names: list[str] = sorted(await self.redis.smembers(keys.CLUSTERS))
            async with self.redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hgetall(keys.cluster(name))
                pipe.get(keys.GENERATION)
                replies: list[Any] = await pipe.execute()
            out = {}
            for name, raw in zip(names, replies[:-1], strict=True):
                if raw:
                    out[name] = _meta(raw)
            return int(replies[-1] or 0), out

        return await self._call(work)

    async def meta(self, cluster: str) -> Meta | None:
        async def work() -> Meta | None:
            raw = await self.redis.hgetall(keys.cluster(cluster))
            return _meta(raw) if raw else None

        return await self._call(work)

    async def digests(self, cluster: str) -> dict[str, str]:
        """``<namespace>/<name>`` → content hash, for every service ``cluster`` holds.

        Read in pages (HSCAN), so a cluster of 10,000 services never arrives as one
        reply that stalls the reader's event loop while it is parsed.
        """

        async def work() -> dict[str, str]:
            out: dict[str, str] = {}
            cursor = 0
            while True:
                cursor, page = await self.redis.hscan(keys.digests(cluster), cursor, count=1000)
                out.update(page)
                if int(cursor) == 0:
                    return out

        return await self._call(work)

    async def records(
        self, cluster: str, wanted: list[str]
    ) -> AsyncIterator[dict[str, ServiceRecord | None]]:
        """The records of ``wanted`` services, page by page (None: not held, or unreadable).

        Each record is validated as the model (what is in Redis is input too) and kept in
        compact form, tagged with the digest it was stored under.
        """
        parts = _chunks(wanted, _READ_CHUNK)

        async def fetch(part: list[str]) -> tuple[list[Any], list[Any]]:
            async def work() -> tuple[list[Any], list[Any]]:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.hmget(keys.services(cluster), part)
                    pipe.hmget(keys.digests(cluster), part)
                    raw, digests = await pipe.execute()
                return raw, digests

            return await self._call(work)

        # The next page is on its way while this one is parsed (Redis and the parser
        # overlap instead of taking turns).
        ahead = asyncio.ensure_future(fetch(parts[0])) if parts else None
        try:
            for i, part in enumerate(parts):
                assert ahead is not None
                raw, digests = await ahead
                ahead = asyncio.ensure_future(fetch(parts[i + 1])) if i + 1 < len(parts) else None
                page: dict[str, ServiceRecord | None] = {}
                for key, value, digest in zip(part, raw, digests, strict=True):
                    page[key] = _record(value, digest) if value is not None else None
                yield page
        finally:
            if ahead is not None:
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)

    async def last_change(self) -> str:
        """The newest change-stream entry's ID: a reader that starts here misses nothing
        that is written after it reads."""

        async def work() -> str:
            last = await self.redis.xrevrange(keys.CHANGES, count=1)
            return str(last[0][0]) if last else "0-0"

        return await self._call(work)

    async def changes(self, after: str, *, block_ms: int) -> tuple[str, list[Change]]:
        """Stream entries after ``after``, waiting up to ``block_ms`` for the first; and the
        oldest entry the stream held just before: if it is newer than ``after``, entries
        the reader never saw were trimmed away, and it must reconcile."""

        async def work() -> tuple[str, list[Change]]:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xrange(keys.CHANGES, count=1)
                pipe.xread({keys.CHANGES: after}, block=block_ms, count=1000)
                oldest, reply = await pipe.execute()
            out: list[Change] = []
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    out.append(_change(entry_id, fields))
            return (str(oldest[0][0]) if oldest else "0-0"), out

        return await self._call(work, blocking_s=block_ms / 1000)


def _append_change(pipe: Any, fields: Mapping[str, str | int]) -> None:
    pipe.xadd(keys.CHANGES, dict(fields), maxlen=keys.STREAM_MAXLEN, approximate=True)


def _announcement(cluster: str, changed: list[str], observed_ms: int | None) -> list[str]:
    """The change-stream entry's fields, flattened (empty: nothing to announce)."""
    if not changed:
        return []
    fields = ["cluster", cluster]
    if len(changed) > keys.MAX_KEYS_PER_CHANGE:
        fields += ["kind", "cluster"]
    else:
        fields += ["kind", "services", "keys", ",".join(changed)]
    if observed_ms is not None:
        fields += ["obs", str(observed_ms)]
    return fields


_WRITE_REPORT = """
-- Apply one report, if the seq the registry read is still the one stored (compare and
-- set): records and digests upserted and removed, the cluster's meta, and, if anything
-- was written, the generation and one change-stream entry. Returns the generation, or
-- -1 when another write came first (the caller reads again).
-- KEYS: meta, services, digests, clusters, generation, changes
-- ARGV: cluster, maxlen, expected seq ('' = none), seq, region, total, #changed,
--       #removed, then (key, digest, record) per change, removed keys, stream fields
local meta, services, digests = KEYS[1], KEYS[2], KEYS[3]
if (redis.call('HGET', meta, 'seq') or '') ~= ARGV[3] then
  return -1
end
local changed, removed = tonumber(ARGV[7]), tonumber(ARGV[8])
local i = 9
for _ = 1, changed do
  redis.call('HSET', services, ARGV[i], ARGV[i + 2])
  redis.call('HSET', digests, ARGV[i], ARGV[i + 1])
  i = i + 3
end
for _ = 1, removed do
  redis.call('HDEL', services, ARGV[i])
  redis.call('HDEL', digests, ARGV[i])
  i = i + 1
end
local now = redis.call('TIME')
local now_ms = string.format('%d', now[1] * 1000 + math.floor(now[2] / 1000))
redis.call('HSET', meta, 'region', ARGV[5], 'seq', ARGV[4], 'last_seen_ms', now_ms,
           'total', ARGV[6])
redis.call('SADD', KEYS[4], ARGV[1])
if changed + removed == 0 then
  return tonumber(redis.call('GET', KEYS[5]) or '0')
end
local generation = redis.call('INCR', KEYS[5])
local fields = {}
for j = i, #ARGV do
  fields[#fields + 1] = ARGV[j]
end
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[2], '*', unpack(fields))
return generation
"""


_DECIDE = """
-- One operator decision: set (ARGV[3] not empty) or clear the subject's value, record
-- its revision (a tombstone when cleared), bump the generation, announce it.
-- KEYS: decisions, drains or policies, decisions rev, generation, changes
-- ARGV: subject, field, value, rev (0: new), maxlen, stream fields
-- Returns {applied, rev, generation, existed}.
local held = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local top = tonumber(redis.call('GET', KEYS[3]) or '0')
local existed = redis.call('HEXISTS', KEYS[2], ARGV[2])
local rev = tonumber(ARGV[4])
if rev == 0 then
  local now = redis.call('TIME')
  rev = math.max(now[1] * 1000000 + now[2], top + 1)
elseif rev <= held then
  return {0, held, tonumber(redis.call('GET', KEYS[4]) or '0'), existed}
end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
else
  redis.call('HDEL', KEYS[2], ARGV[2])
end
local revs = string.format('%d', rev)
redis.call('HSET', KEYS[1], ARGV[1], revs)
if rev > top then
  redis.call('SET', KEYS[3], revs)
end
local generation = redis.call('INCR', KEYS[4])
local fields = {}
for j = 6, #ARGV do
  fields[#fields + 1] = ARGV[j]
end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[5], '*', unpack(fields))
return {1, revs, generation, existed}
"""


_BEACON = """
local now = redis.call('TIME')
redis.call('HSET', KEYS[1], 'alive_ms', now[1] * 1000 + math.floor(now[2] / 1000))
return 1
"""


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _int_or_none(raw: str | None) -> int | None:
    """A stored integer; a missing or garbled one reads as None."""
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return None


def _change(entry_id: str, fields: Mapping[str, str]) -> Change:
    raw_keys = fields.get("keys", "")
    obs = fields.get("obs", "")
    return Change(
        entry_id,
        fields.get("cluster", ""),
        fields.get("kind", ""),
        tuple(k for k in raw_keys.split(",") if k),
        int(obs) if obs.isdigit() else None,
    )


def _cluster(
    name: str, meta: Mapping[str, str], records: Mapping[str, str], drain: Drain | None
) -> ClusterState:
    services = []
    for key in sorted(records):
        service = read_service(records[key])
        # A record this version cannot read is skipped, not fatal: the next report from
        # its cluster replaces it.
        if service is not None:
            services.append(service)
    return ClusterState(
        name=name,
        region=meta.get("region", "unknown"),
        seq=_int(meta.get("seq")),
        last_seen_ms=_int(meta.get("last_seen_ms")),
        services=tuple(services),
        drain=drain,
    )


def _meta(raw: Mapping[str, str]) -> Meta:
    return Meta(
        region=raw.get("region", "unknown"),
        seq=_int(raw.get("seq")),
        last_seen_ms=_int(raw.get("last_seen_ms")),
        total=raw.get("total", ""),
    )


def combined(digests: Iterable[str]) -> str:
    """One digest for a set of service digests (XOR: kept up to date per change).

    The registry stores it per cluster; a resolver keeps its own the same way, and a
    periodic resync reads every cluster's digests only where the two differ.
    """
    total = 0
    for digest in digests:
        total ^= int(digest, 16)
    return format(total, "x")


def _xor_hex(*values: str) -> str:
    total = 0
    for value in values:
        total ^= int(value or "0", 16)
    return format(total, "x")


def _int(raw: str | None) -> int:
    """A stored integer; a missing or garbled one reads as 0 (never seen)."""
    try:
        return int(raw or 0)
    except ValueError:
        return 0


def _record(raw: str, digest: str | None) -> ServiceRecord | None:
    service = read_service(raw)
    if service is None:
        return None  # unreadable by this version: the next report from its cluster replaces it
    return compact(service, digest or content_hash(service))


def _drain(raw: str) -> Drain | None:
    try:
        return Drain.model_validate_json(raw)
    except ValidationError:
        return Drain(reason="(unreadable drain record)")


def _policies(raw: Mapping[str, str]) -> dict[str, PolicyOverride]:
    """The readable overrides (one this version cannot read: the annotations apply)."""
    return {key: p for key, value in raw.items() if (p := parse_policy(value)) is not None}


def _decisions(
    revs: Mapping[str, str], drains: Mapping[str, str], policies: Mapping[str, str]
) -> dict[str, Decision]:
    out = {}
    for kind, values in (("drain", drains), ("policy", policies)):
        for target, value in values.items():
            subject = f"{kind}:{target}"
            out[subject] = Decision(subject, _int(revs.get(subject)), value)
    for subject, rev in revs.items():
        if subject not in out and subject.partition(":")[0] in ("drain", "policy"):
            out[subject] = Decision(subject, _int(rev), None)
    return out


def parse_drain(raw: str | None) -> Drain | None:
    """A stored drain; None when cleared or unreadable."""
    return None if raw is None else _drain(raw)


def parse_policy(raw: str | None) -> PolicyOverride | None:
    """A stored policy override; None when cleared or unreadable by this version."""
    if raw is None:
        return None
    try:
        return PolicyOverride.model_validate_json(raw)
    except ValidationError:
        return None


def _drains(raw: Mapping[str, str]) -> dict[str, Drain]:
    return {name: d for name, value in raw.items() if (d := _drain(value)) is not None}


@asynccontextmanager
async def opened(
    where: str | Target, *, timeout: float = 2.0, read_from: ReadFrom = "primary"
) -> AsyncIterator[Store]:
    client = connect(where, timeout=timeout, read_from=read_from)
    try:
        yield Store(client)
    finally:
        await client.aclose()
