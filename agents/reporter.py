"""Talking to the registry API: whole-state reports and heartbeats.

Errors are sorted into what the agent does about them: :class:`Unavailable` (network,
timeouts, 5xx: back off and send everything again), :class:`Refused` (401/403/400: our
configuration or code is wrong; keep trying slowly and say so loudly) and
:class:`Stale` (409 on a report: the registry holds a newer sequence number than ours,
from a previous run of this agent; jump past it).
"""

from __future__ import annotations

from typing import Any

import aiohttp

from registry.model import Report


class ReportError(Exception):
    pass


class Unavailable(ReportError):
    pass


class Refused(ReportError):
    pass


class Stale(ReportError):
    def __init__(self, stored_seq: int) -> None:
        super().__init__(f"the registry holds a newer report (seq {stored_seq})")
        self.stored_seq = stored_seq


class RegistryClient:
    def __init__(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}

    async def _post(self, path: str, body: str) -> tuple[int, Any]:
        try:
            async with self.session.post(
                self.url + path,
                data=body,
                headers={**self.headers, "Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=5),
            ) as response:
                try:
                    payload = await response.json(content_type=None)
                except ValueError:
                    payload = {"error": await response.text()}
                return response.status, payload
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise Unavailable(f"{path}: {exc.__class__.__name__}: {exc}") from exc

    def _raise_for(self, status: int, payload: Any) -> None:
        message = payload.get("error", "") if isinstance(payload, dict) else str(payload)
        if status >= 500:
            raise Unavailable(f"registry answered {status}: {message}")
        raise Refused(f"registry answered {status}: {message}")

    async def report(self, report: Report) -> int:
        """Send the whole state; returns the registry's new generation."""
        status, payload = await self._post("/v1/reports", report.model_dump_json())
        if status == 200:
            return int(payload.get("generation", 0))
        if status == 409 and isinstance(payload, dict) and "stored_seq" in payload:
            raise Stale(int(payload["stored_seq"]))
        self._raise_for(status, payload)
        raise AssertionError("unreachable")

    async def heartbeat(self, seq: int) -> bool:
        """Renew the lease; False when the registry wants the whole state again."""
        status, payload = await self._post("/v1/heartbeats", f'{{"seq": {seq}}}')
        if status == 200:
            return True
        if status == 409:
            return False
        self._raise_for(status, payload)
        raise AssertionError("unreachable")
