"""The informer loop: list, then watch from the list's resourceVersion, for ever.

::

    LIST (paged: limit + continue; resourceVersion unset = a consistent read)
      → replace the cache; objects that vanished are removed → notify
    WATCH from the list's resourceVersion, allowWatchBookmarks, timeoutSeconds ± jitter,
          read-inactivity timeout above the bookmark period
      ADDED / MODIFIED → cache[key] = translated object      DELETED → drop it
      BOOKMARK → only the resourceVersion moves (a bookmark is not an object)
      clean end (the server's timeout) → watch again from the last resourceVersion
      ERROR with code 410, or HTTP 410 → LIST again (what was deleted meanwhile leaves)
      connection error, read timeout, 5xx → jittered backoff, watch again from the
                                             last resourceVersion (a 410 then relists)

The shape follows kopf's ``clients/watching.py`` and the notes in
``shared/notes/kubernetes.md``: match on ``code == 410`` (its reason was ``Gone`` on old
servers, ``Expired`` now); compare resourceVersions only for equality; never trust a
bookmark to arrive (the watch cache sends one about every minute, plus one shortly before
the deadline), so the read timeout (90 s) sits above that period.

The client is kubernetes_asyncio, used for what it is good at (configuration, auth with
token refresh, TLS, URLs and parameters) with ``_preload_content=False``: we read the
response bytes ourselves, so each raw object is translated exactly once, by the
``parse`` function given, and nothing past here sees a Kubernetes dict. Its own
``Watch`` helper is not used: it swallows a 410 once, and deserialises into slow models.
"""

from __future__ import annotations

import asyncio
import json
import random
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
    """Anything else that ends a request or a stream: back off, watch again."""

    def __init__(self, message: str, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class WatchSettings:
    page_size: int = 500
    timeout_s: float = 300.0
    """``timeoutSeconds`` asked of the server, jittered ±10 % so pods do not re-watch
    in step."""
    read_timeout_s: float = 90.0
    """No byte for this long ends the watch; above the ~60 s bookmark period."""
    connect_timeout_s: float = 10.0
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0


@dataclass(slots=True)
class Stats:
    lists: int = 0
    watches: int = 0
    events: int = 0
    bookmarks: int = 0
    expired: int = 0
    errors: int = 0
    rejected: int = 0


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
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.lister = lister
        self.parse = parse
        self.settings = settings
        self.on_change = on_change
        """Called with the key of a changed object, or None after a (re)list or reconnect:
        then anything may have changed."""
        self.rng = rng or random.Random()
        self.items: dict[Key, T] = {}
        self.resource_version: str | None = None
        self.synced = asyncio.Event()
        self.stats = Stats()
        self.log = structlog.get_logger("agents.kubernetes").bind(informer=name)
        self._rejected: dict[Key, str] = {}
        self._reconnecting = False

    def _timeout(self) -> tuple[float, float]:
        return (self.settings.connect_timeout_s, self.settings.read_timeout_s)

    async def _request(self, **params: Any) -> tuple[int, Any]:
        """Start a request; returns (status, response). The caller releases it."""
        try:
            response = await self.lister(
                _preload_content=False, _request_timeout=self._timeout(), **params
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Failed(f"{exc.__class__.__name__}: {exc}") from exc
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
        self.on_change(None)
        return self.resource_version

    async def watch(self, resource_version: str) -> tuple[str, bool]:
        """One watch request, until the server ends it. Returns the last resourceVersion
        and whether anything at all arrived."""
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
            if self._reconnecting:
                # Back after an error: events may have been missed (a 410 will relist),
                # so have every Service compared with what was reported.
                self._reconnecting = False
                self.on_change(None)
            while True:
                try:
                    line = await response.content.readline()
                except TimeoutError as exc:
                    raise Failed(
                        f"no event or bookmark in {self.settings.read_timeout_s:g}s"
                    ) from exc
                except (aiohttp.ClientError, OSError) as exc:
                    raise Failed(f"stream broken: {exc.__class__.__name__}: {exc}") from exc
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
        rv: str | None = None
        while True:
            try:
                if rv is None:
                    rv = await self.list()
                    backoff = self.settings.backoff_s
                rv, heard = await self.watch(rv)
                if heard:
                    backoff = self.settings.backoff_s
                else:
                    # A watch that ended with nothing said is fine once (a quiet timeout);
                    # a server ending every watch at once must not make us spin.
                    await asyncio.sleep(backoff * (0.5 + self.rng.random()) / 4)
            except Gone as exc:
                self.stats.expired += 1
                self.log.info("resourceVersion expired; listing again", detail=str(exc))
                rv = None
            except Failed as exc:
                self.stats.errors += 1
                self._reconnecting = True
                delay = max(backoff * (0.5 + self.rng.random()), exc.retry_after_s)
                self.log.warning("watch failed; backing off", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, self.settings.backoff_max_s)
