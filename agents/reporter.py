"""Talking to the registry API: reports (whole states and deltas) and heartbeats.

Errors are sorted into what the agent does about them::

    ReportError
    ├── Unavailable   network, timeouts, 5xx: the outcome is unknown; back off, send whole
    ├── Throttled     429: over the cluster's report rate; nothing was written: send the
    │                 same changes after ``retry_after_s`` (heartbeats go on meanwhile)
    ├── Refused       401/403/400/413: our configuration or code is wrong; keep trying
    │                 slowly and say so loudly
    ├── Resync        409 with "resync": the registry does not hold the delta's base_seq
    │                 (it lost data, or missed a report); send the whole state
    └── Stale         409 with "stored_seq" only: the registry holds a newer seq than ours,
                      from a previous run of this agent; jump past it

A report body over :data:`GZIP_ABOVE` bytes (the whole state of a large cluster) is sent
gzip-compressed (``Content-Encoding: gzip``); Service records compress about tenfold.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp

from registry.grants import Grant, check_pattern
from registry.model import Report

GZIP_ABOVE = 64 * 1024


class ReportError(Exception):
    pass


class Unavailable(ReportError):
    pass


class StoreUnavailable(Unavailable):
    """503: the registry answered, but its Redis did not (a restart, a Sentinel failover).
    The registry fails fast, and writes resume within seconds: retry soon."""


class Throttled(ReportError):
    """429: the registry refused the report before reading it; retry after a while."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Refused(ReportError):
    def __init__(self, message: str, grant: Grant | None = None) -> None:
        super().__init__(message)
        self.grant = grant
        """The cluster's grant, when the registry refused for want of one (403)."""


class Resync(ReportError):
    def __init__(self, stored_seq: int | None) -> None:
        super().__init__(f"the registry asks for the whole state (it holds seq {stored_seq})")
        self.stored_seq = stored_seq


class Stale(ReportError):
    def __init__(self, stored_seq: int) -> None:
        super().__init__(f"the registry holds a newer report (seq {stored_seq})")
        self.stored_seq = stored_seq


def _grant(payload: Any) -> Grant | None:
    """A grant as the registry states it; None if it is not one."""
    if not isinstance(payload, dict):
        return None
    exports, policy = payload.get("exports"), payload.get("policy_annotations")
    if not isinstance(exports, list) or not isinstance(policy, bool):
        return None
    try:
        return Grant(tuple(check_pattern(p) for p in exports), policy)
    except ValueError:
        return None


class RegistryClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        token: str,
        *,
        timeout_s: float = 5.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self.tls: ssl.SSLContext | bool = tls if tls is not None else True
        """How https:// is verified: a context with the registry's CA, or the system's."""
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        """Above the registry's Redis bound (GLOBALDNS_REDIS_TIMEOUT_S): a registry whose
        Redis is stuck answers 503 first, and the outcome is known rather than a timeout."""
        self.headers = {"Authorization": f"Bearer {token}"}

    async def _post(self, path: str, body: bytes) -> tuple[int, Any]:
        headers = {**self.headers, "Content-Type": "application/json"}
        if len(body) > GZIP_ABOVE:
            body = await asyncio.to_thread(gzip.compress, body, 5)
            headers["Content-Encoding"] = "gzip"
        try:
            async with self.session.post(
                self.url + path,
                data=body,
                headers=headers,
                timeout=self.timeout,
                ssl=self.tls,
            ) as response:
                try:
                    payload = await response.json(content_type=None)
                except ValueError:
                    payload = {"error": await response.text()}
                if response.status == 429 and isinstance(payload, dict):
                    payload.setdefault("retry_after_s", _seconds(response.headers))
                return response.status, payload
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise Unavailable(f"{path}: {exc.__class__.__name__}: {exc}") from exc

    def _raise_for(self, status: int, payload: Any) -> None:
        message = payload.get("error", "") if isinstance(payload, dict) else str(payload)
        if status == 503:
            raise StoreUnavailable(f"registry answered {status}: {message}")
        if status == 429:
            wait = payload.get("retry_after_s") if isinstance(payload, dict) else None
            seconds = float(wait) if isinstance(wait, int | float) else 1.0
            raise Throttled(f"registry answered {status}: {message}", seconds)
        if status >= 500:
            raise Unavailable(f"registry answered {status}: {message}")
        grant = _grant(payload.get("grant")) if isinstance(payload, dict) else None
        raise Refused(f"registry answered {status}: {message}", grant)

    async def grant(self) -> Grant:
        """What this cluster may export and annotate (``GET /v1/grants``)."""
        try:
            async with self.session.get(
                self.url + "/v1/grants", headers=self.headers, timeout=self.timeout, ssl=self.tls
            ) as response:
                try:
                    payload = await response.json(content_type=None)
                except ValueError:
                    payload = {"error": await response.text()}
                status = response.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise Unavailable(f"/v1/grants: {exc.__class__.__name__}: {exc}") from exc
        if status == 200:
            found = _grant(payload)
            if found is not None:
                return found
            raise Refused(f"/v1/grants: unreadable answer {str(payload)[:200]!r}")
        self._raise_for(status, payload)
        raise AssertionError("unreachable")

    async def report(self, report: Report) -> int:
        """Send a whole state or a delta; returns the registry's new generation."""
        status, payload = await self._post("/v1/reports", report.model_dump_json().encode())
        if status == 200:
            return int(payload.get("generation", 0))
        if status == 409 and isinstance(payload, dict):
            stored = payload.get("stored_seq")
            if payload.get("resync"):
                raise Resync(int(stored) if stored is not None else None)
            if stored is not None:
                raise Stale(int(stored))
        self._raise_for(status, payload)
        raise AssertionError("unreachable")

    async def heartbeat(self, seq: int) -> bool:
        """Renew the lease; False when the registry wants the whole state again."""
        status, payload = await self._post("/v1/heartbeats", b'{"seq": %d}' % seq)
        if status == 200:
            return True
        if status == 409:
            return False
        self._raise_for(status, payload)
        raise AssertionError("unreachable")


def _seconds(headers: Mapping[str, str]) -> float:
    """``Retry-After`` in seconds (the HTTP-date form is not used by the registry): 1 if
    absent or unreadable."""
    value = headers.get("Retry-After", "")
    return float(value) if value.isdigit() else 1.0
