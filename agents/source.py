"""What an agent needs from a source of services: the seam between sources and reporting.

:class:`agents.agent.Agent` owns probing and reporting; a *source* owns what exists. The
static file (:mod:`agents.static`) and Kubernetes (:mod:`agents.kubernetes.source`) both
answer the same few questions:

* which services to report, given the agent's own probe verdicts;
* which endpoints this agent probes, and how (a Kubernetes DaemonSet pod probes only the
  endpoints on its own node);
* whether it is ready to report (a Kubernetes source must have listed everything once,
  or its first report would wipe the registry's picture) and whether this agent is the
  one that reports for the cluster (one leader per cluster).

A source calls the ``notify`` callback it was given whenever any answer may have changed;
the agent coalesces those calls into reports. This module is pure data and a protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from registry.model import ProbeState, Service

VerdictKey = tuple[str, str]
"""``(<namespace>/<name>, address)``: one endpoint of one service."""


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
    def subscribe(self, notify: Callable[[], None]) -> None:
        """Call ``notify`` whenever services, jobs, readiness or leadership may differ."""

    def ready(self) -> bool:
        """Whether the source knows enough to report the whole state."""

    def reporting(self) -> bool:
        """Whether this agent is the one that reports for its cluster now."""

    def probe_jobs(self) -> Mapping[str, ProbeJob]:
        """What this agent probes, by ``<namespace>/<name>``."""

    def report_services(self, verdicts: Mapping[VerdictKey, ProbeState]) -> tuple[Service, ...]:
        """The whole state, with this agent's own probe verdicts folded in."""

    def verdicts_changed(self, verdicts: Mapping[VerdictKey, ProbeState]) -> None:
        """This agent's verdicts flipped (a DaemonSet pod publishes them to its lease)."""
