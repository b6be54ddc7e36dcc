"""The informer loop: list, then watch from the list's resourceVersion, for ever.

::

    LIST (paged: limit + continue; resourceVersion unset = a consistent read)
      → replace the cache; objects that vanished are removed → notify
    WATCH from the list's resourceVersion, allowWatchBookmarks, timeoutSeconds ± jitter,
          read-inactivity timeout above the bookmark period
      ADDED / MODIFIED → cache[key] = translated object      DELETED → drop it
      BOOKMARK → only the resourceVersion moves (a bookmark is not an object)
      clean end (the server's timeout) → watch again from the last resourceVersion
      read timeout (a quiet resource)   → the same: normal, not an error
      ERROR with code 410, or HTTP 410 → LIST again (what was deleted meanwhile leaves)
      connection error, broken stream, 5xx → jittered backoff, watch again from the last
                                             resourceVersion received (a 410 then relists)
      the re-watch cannot connect either   → the apiserver was down: LIST when it is back

The shape follows kopf's ``clients/watching.py`` and the notes in
``shared/notes/kubernetes.md``: match on ``code == 410`` (its reason was ``Gone`` on old
servers, ``Expired`` now); compare resourceVersions only for equality; never trust a
bookmark to arrive (the watch cache sends one about every minute, plus one shortly before
the deadline), so the read timeout (90 s) sits above that period. A real apiserver sends
no bookmark at all on a quiet resource (none in a watch without events, [run]), so a read
timeout is the normal end of a quiet watch: it is re-watched from the last
resourceVersion at once, counted as ``quiet``, and is no error.

**Freshness.** ``stale_since`` says since when the cache may lag the apiserver: set by
the first failure, cleared when the informer has resynced — a re-watch answered after a
single failure (a dropped connection: the replay from the last resourceVersion brings
what was missed), or a completed list after the apiserver could not be reached twice in
a row (it was down; a replay has no end marker, a list is whole by construction, and
after an apiserver restart the old resourceVersion is usually too old anyway). The
Kubernetes source reports nothing while any informer is stale (:mod:`.outage`).

The client is kubernetes_asyncio, used for what it is good at (configuration, auth with
token refresh, TLS, URLs and parameters) with ``_preload_content=False``: we read the
response bytes ourselves, so each raw object is translated exactly once, by the
``parse`` function given, and nothing past here sees a Kubernetes dict. Its own
``Watch`` helper is not used: it swallows a 410 once, and deserialises into slow models.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aiohttp
import structlog

from agents.kubernetes.objects import Key, Rejected

T = TypeVar("T")

Lister = Callable[..., Awaitable[Any]]
"""A kubernetes_asyncio ``list_*`` method, with its fixed arguments bound."""


class Gone(Exception):
    """410: the resourceVersion (or continue token) is too old; list again."""


class Failed(Exception):
    """Anything else that ends a request or a stream: back off, watch again.

    ``unreachable``: no answer from the apiserver at all (connection refused or cut, a
    timeout), as opposed to an HTTP error it answered with."""

    def __init__(
        self, message: str, retry_after_s: float = 0.0, *, unreachable: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.unreachable = unreachable


@dataclass(frozen=True, slots=True)
class WatchSettings:
    page_size: int = 500
    timeout_s: float = 300.0
    """``timeoutSeconds`` asked of the server, jittered ±10 % so pods do not re-watch
    in step."""
    read_timeout_s: float = 90.0
    """No byte for this long ends the watch (a quiet one: it is simply watched again);
    above the ~60 s bookmark period of a watch that has events."""
    connect_timeout_s: float = 10.0
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0


@dataclass(slots=True)
class Stats:
    lists: int = 0
    watches: int = 0
    events: int = 0
    bookmarks: int = 0
    quiet: int = 0
    """Watches that heard nothing for ``read_timeout_s`` and were watched again."""
    expired: int = 0
    errors: int = 0
    rejected: int = 0
    longest_backoff_s: float = 0.0
    """The longest wait chosen after an error (``Retry-After`` sets a floor)."""


def _key(raw: Mapping[str, Any]) -> Key:
    meta = raw.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


class Informer(Generic[T]):
    def __init__(
        self,
        name: str,
        lister: Lister,
        parse: Callable[[Mapping[str, Any]], T | Rejected],
        *,
        settings: WatchSettings = WatchSettings(),
        on_change: Callable[[Key | None], None] = lambda key: None,
        on_freshness: Callable[[], None] = lambda: None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.lister = lister
        self.parse = parse
        self.settings = settings
        self.on_change = on_change
        """Called with the key of a changed object, or None after a (re)list or reconnect:
        then anything may have changed."""
        self.on_freshness = on_freshness
        """Called when :attr:`stale_since` changes."""
        self.rng = rng or random.Random()
        self.clock = clock
        self.items: dict[Key, T] = {}
        self.resource_version: str | None = None
        self.synced = asyncio.Event()
        self.stats = Stats()
        self.log = structlog.get_logger("agents.kubernetes").bind(informer=name)
        self._rejected: dict[Key, str] = {}
        self._reconnecting = False
        self._unreachable = 0
        """Consecutive failures without an answer from the apiserver."""
        self._poked = asyncio.Event()
        self.stale_since: float | None = None
        """Monotonic time of the first failure not yet followed by a resync; None: fresh."""

    def _stale(self, stale: bool) -> None:
        if stale == (self.stale_since is not None):
            return
        self.stale_since = self.clock() if stale else None
        self.on_freshness()

    def poke(self) -> None:
        """The apiserver answers again (another caller got through): retry now rather
        than at the end of the back-off."""
        self._poked.set()

    def _timeout(self) -> tuple[float, float]:
        return (self.settings.connect_timeout_s, self.settings.read_timeout_s)

    async def _request(self, **params: Any) -> tuple[int, Any]:
        """Start a request; returns (status, response). The caller releases it."""
        try:
            response = await self.lister(
                _preload_content=False, _request_timeout=self._timeout(), **params
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Failed(f"{exc.__class__.__name__}: {exc}", unreachable=True) from exc
        return response.status, response

    @staticmethod
    async def _status_error(status: int, response: Any) -> Exception:
        try:
            body = json.loads(await response.read())
            message = body.get("message", "") if isinstance(body, dict) else ""
        except (ValueError, aiohttp.ClientError, OSError, TimeoutError):
            message = ""
        if status == 410:
            return Gone(message or "410 Gone")
        retry_after = str(response.headers.get("Retry-After", ""))
        wait = min(float(retry_after), 60.0) if retry_after.isdigit() else 0.0
        return Failed(f"HTTP {status}: {message}", retry_after_s=wait)

    def _accept(self, key: Key, raw: Mapping[str, Any], into: dict[Key, T]) -> None:
        parsed = self.parse(raw)
        if isinstance(parsed, Rejected):
            into.pop(key, None)
            self.stats.rejected += 1
            if self._rejected.get(key) != parsed.reason:
                self._rejected[key] = parsed.reason
                self.log.info("object skipped", object="/".join(key), reason=parsed.reason)
            return
        self._rejected.pop(key, None)
        into[key] = parsed

    async def list(self) -> str:
        """One consistent, paged list; replaces the cache. Returns its resourceVersion."""
        items: dict[Key, T] = {}
        token: str | None = None
        while True:
            params: dict[str, Any] = {"limit": self.settings.page_size}
            if token:
                params["_continue"] = token
            status, response = await self._request(**params)
            try:
                if status != 200:
                    raise await self._status_error(status, response)
                try:
                    document = json.loads(await response.read())
                except (ValueError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                    raise Failed(f"list: unreadable answer: {exc}") from exc
            finally:
                response.release()
            for raw in document.get("items") or ():
                self._accept(_key(raw), raw, items)
            meta = document.get("metadata") or {}
            token = meta.get("continue") or None
            if token is None:
                break
        vanished = set(self.items) - set(items)
        self.items = items
        self.resource_version = str(meta.get("resourceVersion") or "")
        self.stats.lists += 1
        self.log.info(
            "listed",
            objects=len(items),
            vanished=len(vanished),
            resource_version=self.resource_version,
        )
        self.synced.set()
        self._reconnecting = False
        self._unreachable = 0
        self._stale(False)
        self.on_change(None)
        return self.resource_version

    async def watch(self, resource_version: str) -> tuple[str, bool]:
        """One watch request, until the server ends it or says nothing for
        ``read_timeout_s`` (a quiet resource). Returns the last resourceVersion and
        whether anything at all arrived (a quiet end counts as heard: it took its
        time)."""
        timeout = int(self.settings.timeout_s * (0.9 + 0.2 * self.rng.random()))
        status, response = await self._request(
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=max(1, timeout),
        )
        self.stats.watches += 1
        rv, heard = resource_version, False
        try:
            if status != 200:
                raise await self._status_error(status, response)
            self._unreachable = 0
            if self._reconnecting:
                # Back after an error: the replay from the last resourceVersion brings
                # what was missed (or a 410 relists); have every Service compared with
                # what was reported.
                self._reconnecting = False
                self._stale(False)
                self.on_change(None)
            while True:
                try:
                    line = await response.content.readline()
                except TimeoutError:
                    # A real apiserver sends no bookmark on a quiet resource: normal.
                    self.stats.quiet += 1
                    self.log.debug(
                        "quiet watch; watching again",
                        silent_s=self.settings.read_timeout_s,
                        resource_version=rv,
                    )
                    return rv, True
                except (aiohttp.ClientError, OSError) as exc:
                    raise Failed(
                        f"stream broken: {exc.__class__.__name__}: {exc}", unreachable=True
                    ) from exc
                if not line:
                    return rv, heard
                if not line.strip():
                    continue
                heard = True
                rv = self._event(line, rv)
                self.resource_version = rv
        finally:
            response.release()

    def _event(self, line: bytes, rv: str) -> str:
        try:
            event = json.loads(line)
            kind = event["type"]
            raw = event["object"]
        except (ValueError, KeyError, TypeError) as exc:
            raise Failed(f"malformed watch event: {line[:200]!r}") from exc
        if kind == "ERROR":
            code = raw.get("code") if isinstance(raw, dict) else None
            message = raw.get("message", "") if isinstance(raw, dict) else ""
            if code == 410:
                raise Gone(message or "410")
            raise Failed(f"watch error {code}: {message}")
        new_rv = str((raw.get("metadata") or {}).get("resourceVersion") or rv)
        if kind == "BOOKMARK":
            self.stats.bookmarks += 1
            return new_rv
        key = _key(raw)
        if kind in ("ADDED", "MODIFIED"):
            self._accept(key, raw, self.items)
        elif kind == "DELETED":
            self.items.pop(key, None)
            self._rejected.pop(key, None)
        else:
            self.log.warning("unknown watch event type", type=kind)
            return new_rv
        self.stats.events += 1
        self.on_change(key)
        return new_rv

    async def run(self) -> None:
        """List and watch until cancelled."""
        backoff = self.settings.backoff_s
        relist = True
        while True:
            try:
                if relist or self.resource_version is None:
                    await self.list()
                    relist = False
                    backoff = self.settings.backoff_s
                assert self.resource_version is not None
                _rv, heard = await self.watch(self.resource_version)
                if heard:
                    backoff = self.settings.backoff_s
                else:
                    # A watch the server ended at once with nothing said is fine once; a
                    # server ending every watch at once must not make us spin.
                    await asyncio.sleep(backoff * (0.5 + self.rng.random()) / 4)
            except Gone as exc:
                self.stats.expired += 1
                self.log.info("resourceVersion expired; listing again", detail=str(exc))
                relist = True
            except Failed as exc:
                # Resumed from the last resourceVersion received (events and bookmarks
                # move it), so a dropped connection costs no relist; but when the retry
                # cannot reach the apiserver either, it was down: list when it is back.
                self.stats.errors += 1
                self._reconnecting = True
                self._unreachable = self._unreachable + 1 if exc.unreachable else 0
                relist = relist or self._unreachable >= 2
                self._stale(True)
                delay = max(backoff * (0.5 + self.rng.random()), exc.retry_after_s)
                self.stats.longest_backoff_s = max(self.stats.longest_backoff_s, delay)
                self.log.warning("watch failed; backing off", error=str(exc), retry_in=delay)
                await self._backoff(delay)
                backoff = min(backoff * 2, self.settings.backoff_max_s)

    async def _backoff(self, delay: float) -> None:
        self._poked.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._poked.wait(), timeout=delay)
