"""What an agent needs from a source of services: the seam between sources and reporting.

:class:`agents.agent.Agent` owns probing and reporting; a *source* owns what exists. The
static file (:mod:`agents.static`) and Kubernetes (:mod:`agents.kubernetes.source`) both
answer the same few questions:

* which services to report, given the agent's own probe verdicts;
* which endpoints this agent probes, and how (a Kubernetes DaemonSet pod probes only the
  endpoints on its own node);
* whether it is ready to report (a Kubernetes source must have listed everything once,
  or its first report would wipe the registry's picture), whether this agent is the
  one that reports for the cluster (one leader per cluster), and whether it must only
  hold the registry lease for now (its picture may be stale).

A source calls the ``notify`` callback it was given whenever an answer may have changed,
naming the services that may differ (``<namespace>/<name>``): a watch event names its
Service, a probe verdict its service. ``None`` means "anything may have changed" (the
start, a relist, a change of leadership or of the other nodes' Leases). The agent
coalesces those calls, asks :meth:`Source.report_services` for just the services named,
and reports only those whose content differs from what the registry acknowledged (see
:mod:`agents.schedule` and :mod:`agents.delta`). This module is pure data and a protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from registry.model import ProbeState, Service

VerdictKey = tuple[str, str]
"""``(<namespace>/<name>, address)``: one endpoint of one service."""

Notify = Callable[[Collection[str] | None], None]
"""Called with the ``<namespace>/<name>`` keys that may have changed, or None: anything."""


@dataclass(frozen=True, slots=True)
class Check:
    """How to probe: the settings shared by every target of one service."""

    kind: Literal["tcp", "http"] = "tcp"
    path: str = "/"
    interval_s: float = 1.0
    timeout_s: float = 0.5
    rise: int = 2
    fall: int = 2


@dataclass(frozen=True, slots=True)
class Target:
    address: str
    port: int


@dataclass(frozen=True, slots=True)
class ProbeJob:
    """One service's probing: one check, the endpoints this agent dials."""

    check: Check
    targets: tuple[Target, ...]


class Source(Protocol):
    def subscribe(self, notify: Notify) -> None:
        """Call ``notify`` whenever services, jobs, readiness or leadership may differ,
        with the keys of the services that may differ (None: any of them)."""

    def ready(self) -> bool:
        """Whether the source knows enough to report the whole state."""

    def reporting(self) -> bool:
        """Whether this agent is the one that reports for its cluster now."""

    def holding(self) -> bool:
        """Whether the reporter may only renew the registry lease, not report: what it
        knows may be stale (a Kubernetes apiserver outage, or watches resyncing)."""

    def probe_jobs(self) -> Mapping[str, ProbeJob]:
        """What this agent probes, by ``<namespace>/<name>``."""

    def report_services(
        self, verdicts: Mapping[VerdictKey, ProbeState], keys: Collection[str] | None = None
    ) -> tuple[Service, ...]:
        """The whole state, with this agent's own probe verdicts folded in; with ``keys``,
        only those services (the ones that exist and are reported: a key missing from
        the answer is a service to remove), at a cost proportional to ``keys``."""

    def verdicts_changed(self, verdicts: Mapping[VerdictKey, ProbeState]) -> None:
        """This agent's verdicts flipped (a DaemonSet pod publishes them to its lease)."""
