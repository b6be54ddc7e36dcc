"""A RegistryClient that keeps what the agent sent and how the registry answered."""

from __future__ import annotations

from dataclasses import dataclass

from agents.reporter import RegistryClient, ReportError
from registry.model import Report


@dataclass(frozen=True)
class Sent:
    report: Report
    answer: str
    """``ok`` or the name of the error raised (``Resync``, ``Stale``, ``Unavailable``...)."""


class RecordingClient(RegistryClient):
    def __init__(self, inner: RegistryClient) -> None:
        super().__init__(inner.session, inner.url, "")
        self.headers = inner.headers
        self.sent: list[Sent] = []
        self.heartbeats: list[tuple[int, str]] = []

    async def report(self, report: Report) -> int:
        try:
            generation = await super().report(report)
        except ReportError as exc:
            self.sent.append(Sent(report, type(exc).__name__))
            raise
        self.sent.append(Sent(report, "ok"))
        return generation

    async def heartbeat(self, seq: int) -> bool:
        try:
            held = await super().heartbeat(seq)
        except ReportError as exc:
            self.heartbeats.append((seq, type(exc).__name__))
            raise
        self.heartbeats.append((seq, "ok" if held else "lost"))
        return held

    def since(self, index: int) -> list[Sent]:
        return self.sent[index:]

    def deltas(self, since: int = 0) -> list[Report]:
        return [s.report for s in self.sent[since:] if s.report.is_delta]

    def wholes(self, since: int = 0) -> list[Report]:
        return [s.report for s in self.sent[since:] if not s.report.is_delta]
