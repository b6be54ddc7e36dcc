"""A RegistryClient that keeps every call the agent made and how the registry answered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agents.reporter import RegistryClient, ReportError
from registry.model import Report


@dataclass(frozen=True)
class Sent:
    kind: Literal["report", "heartbeat"]
    seq: int
    answer: str
    """``ok``, ``lost`` (a heartbeat the registry refused with 409), or the name of the
    error raised (``Resync``, ``Stale``, ``Unavailable``, ``Refused``)."""
    report: Report | None = None

    @property
    def delta(self) -> bool:
        return self.report is not None and self.report.is_delta

    @property
    def whole(self) -> bool:
        return self.report is not None and not self.report.is_delta


class RecordingClient(RegistryClient):
    def __init__(self, inner: RegistryClient) -> None:
        super().__init__(inner.session, inner.url, "")
        self.headers = inner.headers
        self.sent: list[Sent] = []
        """Reports and heartbeats in the order they were answered."""

    async def report(self, report: Report) -> int:
        try:
            generation = await super().report(report)
        except ReportError as exc:
            self.sent.append(Sent("report", report.seq, type(exc).__name__, report))
            raise
        self.sent.append(Sent("report", report.seq, "ok", report))
        return generation

    async def heartbeat(self, seq: int) -> bool:
        try:
            held = await super().heartbeat(seq)
        except ReportError as exc:
            self.sent.append(Sent("heartbeat", seq, type(exc).__name__))
            raise
        self.sent.append(Sent("heartbeat", seq, "ok" if held else "lost"))
        return held

    def reports(self, since: int = 0) -> list[Sent]:
        return [s for s in self.sent[since:] if s.kind == "report"]

    def deltas(self, since: int = 0) -> list[Report]:
        return [s.report for s in self.sent[since:] if s.delta and s.report is not None]

    def wholes(self, since: int = 0) -> list[Report]:
        return [s.report for s in self.sent[since:] if s.whole and s.report is not None]
