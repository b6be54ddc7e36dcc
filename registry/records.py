"""Service records in the compact form readers keep: plain slotted tuples, no models.

A resolver holds every endpoint of every cluster in memory (300,000 of them in a large
organisation, 10 million on the path in docs/scaling.md). A pydantic model per endpoint
costs about a kilobyte; these records cost a fifth of that, and the strings they share
(ports, regions, probe details) are shared, not copied.

Stored records are validated with the model (:class:`registry.model.Service`) when they
are read — what is in Redis is input like any other — and then translated here, once.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from registry.model import Policy, Port, Service


@dataclass(slots=True)
class EndpointRecord:
    """Never changed once built (not declared frozen only because a frozen dataclass
    takes twice as long to build, and a resolver builds 300,000 of them on a cold load)."""

    address: str
    family: int
    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None
    probe_healthy: bool | None = None
    """The agent's active-probe verdict; None when the endpoint is not probed."""
    probe_detail: str = ""
    ports: tuple[Port, ...] | None = None
    """This endpoint's own ports (per EndpointSlice) where they differ from the service's."""


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    """One service as one cluster reports it, with the content hash it was stored under."""

    namespace: str
    name: str
    ports: tuple[Port, ...]
    ttl: int | None
    policy: Policy | None
    endpoints: tuple[EndpointRecord, ...]
    digest: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def owner(self) -> str:
        """The DNS owner name relative to the zone: ``<service>.<namespace>``."""
        return f"{self.name}.{self.namespace}"


_ports: dict[tuple[Port, ...], tuple[Port, ...]] = {}


def _shared_ports(ports: tuple[Port, ...]) -> tuple[Port, ...]:
    """One tuple per distinct port list (they repeat across services and endpoints)."""
    if len(_ports) > 100_000:
        _ports.clear()
    return _ports.setdefault(ports, ports)


def compact(service: Service, digest: str = "") -> ServiceRecord:
    endpoints = tuple(
        EndpointRecord(
            e.address,
            6 if ":" in e.address else 4,
            e.conditions.ready,
            e.conditions.serving,
            e.conditions.terminating,
            None if e.probe is None else e.probe.healthy,
            "" if e.probe is None else sys.intern(e.probe.detail),
            None if e.ports is None else _shared_ports(e.ports),
        )
        for e in service.endpoints
    )
    return ServiceRecord(
        namespace=sys.intern(service.namespace),
        name=sys.intern(service.name),
        ports=_shared_ports(service.ports),
        ttl=service.ttl,
        policy=service.policy,
        endpoints=endpoints,
        digest=digest,
    )
