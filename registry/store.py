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

A value the readers cannot read — not an integer, a name that is no name, JSON that is
not the model, a key of another Redis type (WRONGTYPE) — is not a Redis failure: it is
skipped and reported as a :class:`registry.badrecords.BadRecord` (counted in
:attr:`Store.bad_records`, handed to ``on_bad``, and listed in a view's ``problems``),
and every other record is read as usual. Pipelines run with ``raise_on_error=False`` so
that one key of the wrong type costs only its own reply.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError, ResponseError

from registry import connection, keys
from registry.badrecords import BadRecord, Tally, shown
from registry.connection import ReadFrom, Target
from registry.decisions import Decision, drain_subject, policy_subject
from registry.errors import LimitExceeded, NeedResync, StaleReport, StoreError
from registry.model import (
    ClusterState,
    Drain,
    PolicyOverride,
    RegistryView,
    Report,
    Service,
    content_hash,
    is_label,
    is_service_key,
    read_service,
)
from registry.records import ServiceRecord, compact

T = TypeVar("T")
Bad = Callable[[BadRecord], None]

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
    """A cluster's region, the seq of the report held, and its lease (Redis ms); None
    where the field is not stored or could not be read (a bad record, reported)."""

    region: str | None
    seq: int | None
    last_seen_ms: int | None
    total: str = ""
    """:func:`combined` digest of every service the cluster holds ("" = not known)."""


@dataclass(frozen=True, slots=True)
class Leases:
    """Every cluster's lease, read in one round trip with the server's time."""

    now_ms: int
    generation: int | None
    """None: the generation could not be read (a bad record, reported)."""
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
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        deadline_s: float | None = None,
        on_bad: Bad | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
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
        self.bad_records = Tally()
        """Records skipped as unreadable, by kind of key (for the process's metrics)."""
        self.on_bad = on_bad
        """Told of a bad record when it should be logged: the first time, then at most
        once a minute while it stays bad (:class:`registry.badrecords.Tally`)."""
        self._clock = clock

    def _bad(self, record: BadRecord) -> None:
        if self.bad_records.note(record, self._clock()) and self.on_bad is not None:
            self.on_bad(record)

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
                touched = [k for k in (*changed, *removed) if k in held]
                if report.base_seq is None:
                    total = combined(digests.values())
                elif _is_hex(total_raw) and all(_is_hex(held[k]) for k in touched):
                    total = _xor_hex(
                        total_raw,
                        combined(held[k] for k in touched),
                        combined(digests[k] for k in changed),
                    )
                else:
                    # Unknown (never stored, or a garbled digest) until the next whole
                    # state: readers compare every digest meanwhile.
                    total = ""
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
            if _int_or_none(stored) != seq:
                return False  # a garbled seq too: the whole state sent next replaces it
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
        """The newest revision of any decision Redis holds (0: none, or unreadable)."""

        async def work() -> int:
            raw = await self._one(self.redis.get(keys.DECISIONS_REV), keys.DECISIONS_REV, "string")
            return _int_field(raw, keys.DECISIONS_REV, "", self._bad) or 0

        return await self._call(work)

    async def decisions(self) -> dict[str, Decision]:
        """Every decision Redis holds, cleared ones included, by subject. A subject whose
        value cannot be read is left out (the reader keeps what it holds)."""

        async def work() -> dict[str, Decision]:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(keys.DECISIONS)
                pipe.hgetall(keys.DRAINS)
                pipe.hgetall(keys.POLICIES)
                replies = await pipe.execute(raise_on_error=False)
            bad = self._bad
            revs, drains, policies = (
                _readable(reply, key, "hash", bad)
                for reply, key in zip(replies, _DECISION_KEYS, strict=True)
            )
            return _decisions(revs, drains, policies, bad)

        return await self._call(work)

    async def decision(self, subject: str) -> Decision:
        """One subject's decision (rev 0 and no value: Redis holds none, or it cannot be
        read — either way the reader keeps what it holds)."""
        kind, _, target = subject.partition(":")
        where = keys.DRAINS if kind == "drain" else keys.POLICIES

        async def work() -> Decision:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hget(keys.DECISIONS, subject)
                pipe.hget(where, target)
                rev_raw, value_raw = await pipe.execute(raise_on_error=False)
            bad = self._bad
            rev = _int_field(
                _readable(rev_raw, keys.DECISIONS, "hash", bad), keys.DECISIONS, subject, bad
            )
            if isinstance(value_raw, Exception):
                _readable(value_raw, where, "hash", bad)
                return Decision(subject, 0, None)
            if value_raw is not None:
                _check_decision(kind, where, target, value_raw, bad)
            return Decision(subject, rev or 0, value_raw)

        return await self._call(work)

    # -- reads ----------------------------------------------------------------------

    async def view(self, also: Iterable[str] = ()) -> RegistryView:
        """A consistent picture of every cluster, and the stream position it matches;
        what could not be read is left out and listed in ``problems``. ``also``: clusters
        to look for besides those ``gdns:clusters`` names (the topology's), shown if they
        hold anything, so that a garbled set hides none of them."""
        extra = frozenset(also)

        async def work() -> RegistryView:
            for _ in range(_MAX_OPTIMISTIC_TRIES):
                found: list[BadRecord] = []
                bad = found.append
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.get(keys.GENERATION)
                    pipe.smembers(keys.CLUSTERS)
                    first, members = await pipe.execute(raise_on_error=False)
                listed = _names(_readable(members, keys.CLUSTERS, "set", bad), bad)
                names = sorted(extra.union(listed))
                async with self.redis.pipeline(transaction=False) as pipe:
                    for name in names:
                        pipe.hgetall(keys.cluster(name))
                        pipe.hgetall(keys.services(name))
                    pipe.hgetall(keys.POLICIES)
                    pipe.hgetall(keys.DRAINS)
                    pipe.xrevrange(keys.CHANGES, count=1)
                    pipe.time()
                    pipe.get(keys.GENERATION)
                    replies: list[Any] = await pipe.execute(raise_on_error=False)
                if _raw(replies[-1]) != _raw(first):
                    continue
                generation = _generation(first, bad) or 0
                policies = _policies(_readable(replies[-5], keys.POLICIES, "hash", bad), bad)
                drains = _drains(_readable(replies[-4], keys.DRAINS, "hash", bad), bad)
                last = _readable(replies[-3], keys.CHANGES, "stream", bad)
                seconds, micros = _readable(replies[-2], "TIME", "reply", bad)
                clusters = tuple(
                    _cluster(
                        name,
                        _readable(replies[2 * i], keys.cluster(name), "hash", bad) or {},
                        _readable(replies[2 * i + 1], keys.services(name), "hash", bad) or {},
                        drains.get(name),
                        bad,
                    )
                    for i, name in enumerate(names)
                    if name in listed or replies[2 * i] or replies[2 * i + 1]
                )
                for record in found:
                    self._bad(record)
                return RegistryView(
                    generation=generation,
                    now_ms=int(seconds) * 1000 + int(micros) // 1000,
                    clusters=clusters,
                    stream_id=last[0][0] if last else "0-0",
                    policies=policies,
                    problems=tuple(found),
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
                replies = await pipe.execute(raise_on_error=False)
            bad = self._bad
            meta = _readable(replies[0], keys.cluster(name), "hash", bad)
            records = _readable(replies[1], keys.services(name), "hash", bad) or {}
            drain = _readable(replies[2], keys.DRAINS, "hash", bad)
            if not meta:
                return None
            held = _drains({name: drain} if drain else {}, bad).get(name)
            return _cluster(name, meta, records, held, bad)

        return await self._call(work)

    async def drains(self) -> tuple[dict[str, Drain], tuple[BadRecord, ...]]:
        """Every drain, and what could not be read."""

        async def work() -> tuple[dict[str, Drain], tuple[BadRecord, ...]]:
            found: list[BadRecord] = []
            raw = await self._one(
                self.redis.hgetall(keys.DRAINS), keys.DRAINS, "hash", found.append
            )
            drains = _drains(raw, found.append)
            for record in found:
                self._bad(record)
            return drains, tuple(found)

        return await self._call(work)

    async def leases(self, names: Iterable[str] | None = None) -> Leases:
        """Every cluster's lease (or those of ``names``: one round trip instead of two,
        for a reader that already knows the clusters), with the generation and the time.
        A lease that cannot be read is left out."""

        async def work() -> Leases:
            bad = self._bad
            if names is not None:
                asked = sorted(names)
            else:
                members = await self._one(self.redis.smembers(keys.CLUSTERS), keys.CLUSTERS, "set")
                asked = _names(members, bad)
            async with self.redis.pipeline(transaction=True) as pipe:
                for name in asked:
                    pipe.hget(keys.cluster(name), "last_seen_ms")
                pipe.hget(keys.REGISTRY, "alive_ms")
                pipe.get(keys.GENERATION)
                pipe.time()
                replies: list[Any] = await pipe.execute(raise_on_error=False)
            seconds, micros = _readable(replies[-1], "TIME", "reply", bad)
            last_seen = {}
            for name, reply in zip(asked, replies[:-3], strict=True):
                key = keys.cluster(name)
                seen = _int_field(_readable(reply, key, "hash", bad), key, "last_seen_ms", bad)
                if seen is not None:
                    last_seen[name] = seen
            alive = _readable(replies[-3], keys.REGISTRY, "hash", bad)
            return Leases(
                now_ms=int(seconds) * 1000 + int(micros) // 1000,
                generation=_generation(replies[-2], bad),
                last_seen_ms=last_seen,
                registry_alive_ms=_int_field(alive, keys.REGISTRY, "alive_ms", bad),
            )

        return await self._call(work)

    async def metas(self, also: Iterable[str] = ()) -> tuple[int | None, dict[str, Meta]]:
        """Every cluster's region, seq and lease, and the generation they go with (None:
        unreadable). ``also``: clusters to look for besides those ``gdns:clusters`` names
        (the ones the reader holds or expects), so that a garbled set hides none of them."""

        async def work() -> tuple[int | None, dict[str, Meta]]:
            bad = self._bad
            members = await self._one(self.redis.smembers(keys.CLUSTERS), keys.CLUSTERS, "set")
            names = sorted(set(_names(members, bad)) | set(also))
            async with self.redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hgetall(keys.cluster(name))
                pipe.get(keys.GENERATION)
                replies: list[Any] = await pipe.execute(raise_on_error=False)
            out = {}
            for name, reply in zip(names, replies[:-1], strict=True):
                raw = _readable(reply, keys.cluster(name), "hash", bad)
                if isinstance(reply, Exception):
                    out[name] = Meta(None, None, None)  # its records are still read
                elif raw:
                    out[name] = _meta(name, raw, bad)
            return _generation(replies[-1], bad), out

        return await self._call(work)

    async def meta(self, cluster: str) -> Meta | None:
        async def work() -> Meta | None:
            key = keys.cluster(cluster)
            raw = await self._one(self.redis.hgetall(key), key, "hash")
            return _meta(cluster, raw, self._bad) if raw else None

        return await self._call(work)

    async def digests(self, cluster: str) -> dict[str, str] | None:
        """``<namespace>/<name>`` → content hash, for every service ``cluster`` holds
        (None: the hash cannot be read; a garbled digest reads as "").

        Read in pages (HSCAN), so a cluster of 10,000 services never arrives as one
        reply that stalls the reader's event loop while it is parsed.
        """
        key = keys.digests(cluster)

        async def work() -> dict[str, str] | None:
            out: dict[str, str] = {}
            cursor = 0
            while True:
                try:
                    cursor, page = await self.redis.hscan(key, cursor, count=1000)
                except ResponseError as exc:
                    _readable(exc, key, "hash", self._bad)  # WRONGTYPE, or raised
                    return None
                for field, digest in page.items():
                    if not is_service_key(field):
                        self._bad(BadRecord(key, field, "not a <namespace>/<name>"))
                    elif not _is_hex(digest):
                        self._bad(BadRecord(key, field, f"not a hex digest: {shown(digest)}"))
                        out[field] = ""
                    else:
                        out[field] = digest
                if int(cursor) == 0:
                    return out

        return await self._call(work)

    async def records(
        self, cluster: str, wanted: list[str]
    ) -> AsyncIterator[dict[str, ServiceRecord | None]]:
        """The records of ``wanted`` services, page by page (None: not held).

        Each record is validated as the model (what is in Redis is input too) and kept in
        compact form, tagged with the digest it was stored under. One that cannot be read
        is left out of its page (reported), so the reader keeps what it held.
        """
        parts = _chunks(wanted, _READ_CHUNK)
        where, digest_key = keys.services(cluster), keys.digests(cluster)

        async def fetch(part: list[str]) -> tuple[list[Any] | None, list[Any]]:
            async def work() -> tuple[list[Any] | None, list[Any]]:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.hmget(where, part)
                    pipe.hmget(digest_key, part)
                    raw, digests = await pipe.execute(raise_on_error=False)
                raw = _readable(raw, where, "hash", self._bad)
                digests = _readable(digests, digest_key, "hash", self._bad)
                return raw, digests or [None] * len(part)

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
                for key, value, digest in zip(part, raw or (), digests, strict=False):
                    if value is None:
                        page[key] = None
                    elif (record := _record(cluster, key, value, digest, self._bad)) is not None:
                        page[key] = record
                yield page
        finally:
            if ahead is not None:
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)

    async def last_change(self) -> str | None:
        """The newest change-stream entry's ID: a reader that starts here misses nothing
        that is written after it reads (None: the stream cannot be read)."""

        async def work() -> str | None:
            last = await self._one(
                self.redis.xrevrange(keys.CHANGES, count=1), keys.CHANGES, "stream"
            )
            if last is None:
                return None
            return str(last[0][0]) if last else "0-0"

        return await self._call(work)

    async def changes(self, after: str, *, block_ms: int) -> tuple[str | None, list[Change]]:
        """Stream entries after ``after``, waiting up to ``block_ms`` for the first; and the
        oldest entry the stream held just before: if it is newer than ``after``, entries
        the reader never saw were trimmed away, and it must reconcile. None instead of the
        oldest: the stream cannot be read (reported), and nothing was waited for."""

        async def work() -> tuple[str | None, list[Change]]:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xrange(keys.CHANGES, count=1)
                pipe.xread({keys.CHANGES: after}, block=block_ms, count=1000)
                oldest, reply = await pipe.execute(raise_on_error=False)
            if isinstance(oldest, Exception) or isinstance(reply, Exception):
                _readable(
                    oldest if isinstance(oldest, Exception) else reply,
                    keys.CHANGES,
                    "stream",
                    self._bad,
                )
                return None, []
            out: list[Change] = []
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    out.append(_change(entry_id, fields, self._bad))
            return (str(oldest[0][0]) if oldest else "0-0"), out

        return await self._call(work, blocking_s=block_ms / 1000)

    async def _one(
        self, call: Awaitable[Any], key: str, expected: str, bad: Bad | None = None
    ) -> Any:
        """One command's reply; None when ``key`` holds another type (reported)."""
        try:
            return await call
        except ResponseError as exc:
            return _readable(exc, key, expected, bad or self._bad)

    async def recent_changes(self, count: int) -> list[Change]:
        """The newest ``count`` change-stream entries, newest first (the status page)."""

        async def work() -> list[Change]:
            entries = await self.redis.xrevrange(keys.CHANGES, count=count)
            return [_change(entry_id, fields, self._bad) for entry_id, fields in entries]

        return await self._call(work)


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
-- A garbled revision reads as 0 (and is replaced), so it cannot block decisions.
local held = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') or 0
local top = tonumber(redis.call('GET', KEYS[3]) or '0') or 0
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


_HEX = re.compile(r"[0-9a-fA-F]+")
_DECISION_KEYS = (keys.DECISIONS, keys.DRAINS, keys.POLICIES)
_CLUSTER_KINDS = ("services", "cluster", "drain", "undrain")


def _is_hex(value: str | None) -> bool:
    return value is not None and _HEX.fullmatch(value) is not None


def _readable(reply: Any, key: str, expected: str, bad: Bad) -> Any:
    """A reply, or None when ``key`` holds another Redis type than ``expected`` (a bad
    record, reported). Any other error reply is raised: Redis failed, not the data."""
    if not isinstance(reply, Exception):
        return reply
    if isinstance(reply, ResponseError) and str(reply).startswith("WRONGTYPE"):
        bad(BadRecord(key, "", f"not a {expected}"))
        return None
    raise reply


def _raw(reply: Any) -> Any:
    """A reply as something to compare (error replies compare by their message)."""
    return ("error", str(reply)) if isinstance(reply, Exception) else reply


def _int_field(raw: str | None, key: str, field: str, bad: Bad) -> int | None:
    """A stored integer (None: not stored, or garbled and reported)."""
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        bad(BadRecord(key, field, f"not an integer: {shown(raw)}"))
        return None


def _generation(reply: Any, bad: Bad) -> int | None:
    """The generation (0: none yet; None: unreadable, reported)."""
    raw = _readable(reply, keys.GENERATION, "string", bad)
    if raw is None:
        return None if isinstance(reply, Exception) else 0
    return _int_field(raw, keys.GENERATION, "", bad)


def _names(members: Iterable[str] | None, bad: Bad) -> list[str]:
    """The cluster names of ``gdns:clusters`` (one that is no cluster name is reported)."""
    names = []
    for name in sorted(members or ()):
        if is_label(name):
            names.append(name)
        else:
            bad(BadRecord(keys.CLUSTERS, name, "not a cluster name"))
    return names


def _invalid(exc: ValidationError) -> str:
    """The first thing wrong with a stored record, in a few words."""
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return shown(f"{where + ': ' if where else ''}{first['msg']}").strip("'\"") + more


def _change(entry_id: str, fields: Mapping[str, str], bad: Bad) -> Change:
    """One stream entry; an entry naming no cluster it could be about is kept as an
    entry of no kind (skipped by readers) so that the reader moves past it."""
    kind = fields.get("kind", "")
    cluster = fields.get("cluster", "")
    if kind in _CLUSTER_KINDS and not is_label(cluster):
        bad(BadRecord(keys.CHANGES, entry_id, f"cluster is no cluster name: {shown(cluster)}"))
        return Change(entry_id, "", "")
    named = [k for k in fields.get("keys", "").split(",") if k]
    good = tuple(k for k in named if is_service_key(k))
    if len(good) != len(named):
        wrong = [k for k in named if not is_service_key(k)]
        bad(BadRecord(keys.CHANGES, entry_id, f"keys not <namespace>/<name>: {shown(wrong)}"))
    obs = fields.get("obs", "")
    return Change(
        entry_id, cluster, kind, good, _int_field(obs or None, keys.CHANGES, entry_id, bad)
    )


def _meta(name: str, raw: Mapping[str, str], bad: Bad) -> Meta:
    key = keys.cluster(name)
    region = raw.get("region")
    if region is not None and not is_label(region):
        bad(BadRecord(key, "region", f"not a region name: {shown(region)}"))
        region = None
    total = raw.get("total", "")
    if total and not _is_hex(total):
        bad(BadRecord(key, "total", f"not a hex digest: {shown(total)}"))
        total = ""
    return Meta(
        region=region,
        seq=_int_field(raw.get("seq"), key, "seq", bad),
        last_seen_ms=_int_field(raw.get("last_seen_ms"), key, "last_seen_ms", bad),
        total=total,
    )


def _cluster(
    name: str,
    meta: Mapping[str, str],
    records: Mapping[str, str],
    drain: Drain | None,
    bad: Bad,
) -> ClusterState:
    """A cluster as the API shows it; its unreadable records are left out (reported)."""
    services = [s for key in sorted(records) if (s := _service(name, key, records[key], bad))]
    known = _meta(name, meta, bad)
    return ClusterState(
        name=name,
        region=known.region or "unknown",
        seq=known.seq or 0,
        last_seen_ms=known.last_seen_ms or 0,
        services=tuple(services),
        drain=drain,
    )


def _service(cluster: str, key: str, raw: str, bad: Bad) -> Service | None:
    """A stored service record, validated as the model and against its field."""
    where = keys.services(cluster)
    if not is_service_key(key):
        bad(BadRecord(where, key, "not a <namespace>/<name>"))
        return None
    try:
        service = Service.model_validate_json(raw)
    except ValidationError as exc:
        # An endpoint this version refuses (an address stored before its kind was
        # refused) costs that endpoint, not the service: the rest still answer.
        kept = read_service(raw)
        bad(BadRecord(where, key, _invalid(exc)))
        if kept is None:
            return None
        service = kept
    if service.key != key:
        bad(BadRecord(where, key, f"holds {shown(service.key)}"))
        return None
    return service


def _record(cluster: str, key: str, raw: str, digest: str | None, bad: Bad) -> ServiceRecord | None:
    service = _service(cluster, key, raw, bad)
    if service is None:
        return None
    if digest is not None and not _is_hex(digest):
        bad(BadRecord(keys.digests(cluster), key, f"not a hex digest: {shown(digest)}"))
        digest = None
    return compact(service, digest or content_hash(service))


def _drain(raw: str) -> Drain | None:
    try:
        return Drain.model_validate_json(raw)
    except ValidationError:
        return Drain(reason="(unreadable drain record)")


def _check_decision(kind: str, where: str, target: str, value: str, bad: Bad) -> None:
    """Report a stored drain or override this version cannot read. An unreadable drain
    still drains (failing safe: the cluster stays out); an unreadable override is not
    applied (the service's annotations decide)."""
    model = Drain if kind == "drain" else PolicyOverride
    try:
        model.model_validate_json(value)
    except ValidationError as exc:
        effect = "kept as a drain" if kind == "drain" else "not applied"
        bad(BadRecord(where, target, f"{_invalid(exc)} ({effect})"))


def _target_ok(kind: str, target: str) -> bool:
    return is_label(target) if kind == "drain" else is_service_key(target)


def _target_bad(kind: str, where: str, target: str, bad: Bad) -> None:
    what = "a cluster name" if kind == "drain" else "a <namespace>/<name>"
    bad(BadRecord(where, target, f"not {what}"))


def _policies(raw: Mapping[str, str] | None, bad: Bad) -> dict[str, PolicyOverride]:
    """The readable overrides (one this version cannot read: the annotations apply)."""
    out = {}
    for key, value in (raw or {}).items():
        if not is_service_key(key):
            _target_bad("policy", keys.POLICIES, key, bad)
            continue
        _check_decision("policy", keys.POLICIES, key, value, bad)
        if (override := parse_policy(value)) is not None:
            out[key] = override
    return out


def _drains(raw: Mapping[str, str] | None, bad: Bad) -> dict[str, Drain]:
    out = {}
    for name, value in (raw or {}).items():
        if not is_label(name):
            _target_bad("drain", keys.DRAINS, name, bad)
            continue
        _check_decision("drain", keys.DRAINS, name, value, bad)
        if (drain := _drain(value)) is not None:
            out[name] = drain
    return out


def _decisions(
    revs: Mapping[str, str] | None,
    drains: Mapping[str, str] | None,
    policies: Mapping[str, str] | None,
    bad: Bad,
) -> dict[str, Decision]:
    """Decisions by subject. ``None`` for a hash: it could not be read, so its subjects
    are left out altogether (not taken as cleared)."""
    out = {}
    held_revs = revs or {}
    for kind, where, values in (
        ("drain", keys.DRAINS, drains),
        ("policy", keys.POLICIES, policies),
    ):
        for target, value in (values or {}).items():
            if not _target_ok(kind, target):
                _target_bad(kind, where, target, bad)
                continue
            _check_decision(kind, where, target, value, bad)
            subject = f"{kind}:{target}"
            rev = _int_field(held_revs.get(subject), keys.DECISIONS, subject, bad)
            out[subject] = Decision(subject, rev or 0, value)
    readable = {"drain": drains is not None, "policy": policies is not None}
    for subject, raw in held_revs.items():
        kind, _, target = subject.partition(":")
        if subject in out or not readable.get(kind, False):
            continue  # a kind this version does not know, or its values unreadable
        if not _target_ok(kind, target):
            bad(BadRecord(keys.DECISIONS, subject, "names no cluster or service"))
            continue
        rev = _int_field(raw, keys.DECISIONS, subject, bad)
        if rev is not None:
            out[subject] = Decision(subject, rev, None)
    return out


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


@asynccontextmanager
async def opened(
    where: str | Target, *, timeout: float = 2.0, read_from: ReadFrom = "primary"
) -> AsyncIterator[Store]:
    client = connect(where, timeout=timeout, read_from=read_from)
    try:
        yield Store(client)
    finally:
        await client.aclose()
