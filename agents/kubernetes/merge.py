"""From a Service and its EndpointSlices to one registry record: pure functions.

**Merge.** A Service has several slices when it has more than 100 endpoints, is
dual-stack, or a named target port resolves to different numbers on different pods; and
while the controller moves an endpoint, it may sit in two slices at once (the API docs'
"duplicate endpoints"). All slices are joined and deduplicated by ``(family, address)``,
as kube-proxy's EndpointSliceCache does. Of two copies, the more eligible one wins
(ready, then serving-and-terminating, then neither; ties go to the slice whose name sorts
first): a duplicate exists only while an endpoint moves, and the move must not flap it
out of the answers. Ports are resolved per slice, so each endpoint keeps its own slice's
ports where they differ from the ports all slices agree on.

**Conditions → DNS eligibility** (the table is in ``docs/architecture.md``)::

    ready                      → eligible
    serving and terminating    → fallback: only when the service has no ready endpoint
                                 anywhere (kube-proxy's rule for terminating endpoints)
    otherwise                  → out

``ready`` is true for a terminating pod only under ``publishNotReadyAddresses``, the
Service owner's explicit choice, so it is honoured. The three booleans are stored as
given (after the API's nil defaults); the resolver applies the global fallback.

**Address modes.** ``pods``: the endpoints' own addresses. ``loadbalancer``: the
Service's ``status.loadBalancer.ingress`` IPs, with the Service's own ports, ready while
at least ``min_ready`` endpoints are ready (and not failing a probe).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from agents.kubernetes.annotations import AddressMode, ServiceSettings
from agents.kubernetes.objects import EndpointSlice, KubeService, SlicePort
from registry import addresses
from registry.model import (
    MAX_ENDPOINTS_PER_SERVICE,
    MAX_PORTS,
    Conditions,
    Endpoint,
    Port,
    ProbeState,
    Service,
    is_label,
)

Eligibility = Literal["ready", "fallback", "out"]
_RANK: dict[Eligibility, int] = {"ready": 2, "fallback": 1, "out": 0}
_PROTOCOLS = ("TCP", "UDP", "SCTP")


def eligibility(*, ready: bool, serving: bool, terminating: bool) -> Eligibility:
    if ready:
        return "ready"
    if serving and terminating:
        return "fallback"
    return "out"


@dataclass(frozen=True, slots=True)
class MergedEndpoint:
    address: str
    family: int
    ready: bool
    serving: bool
    terminating: bool
    node: str | None
    zone: str | None
    ports: tuple[SlicePort, ...]
    slice: str

    @property
    def eligibility(self) -> Eligibility:
        return eligibility(ready=self.ready, serving=self.serving, terminating=self.terminating)


@dataclass(frozen=True, slots=True)
class Merged:
    endpoints: tuple[MergedEndpoint, ...] = ()
    ports: tuple[SlicePort, ...] = ()
    """The ports every slice that has them agrees on."""
    notes: tuple[str, ...] = ()


def _usable(address: str, family: int) -> str | None:
    """The address in canonical form, or None when an endpoint cannot have it
    (:mod:`registry.addresses`; loopback is left for the registry to judge)."""
    try:
        ip = addresses.parse(address)
    except ValueError:
        return None
    if ip.version != family or addresses.problem(ip, loopback=True) is not None:
        return None
    return ip.compressed


def merge(slices: Iterable[EndpointSlice]) -> Merged:
    chosen: dict[tuple[int, str], MergedEndpoint] = {}
    numbers: dict[tuple[str, str], set[int]] = {}
    seen_ports: dict[tuple[str, str], SlicePort] = {}
    notes: list[str] = []
    for s in sorted(slices, key=lambda s: s.name):
        notes.extend(f"slice {s.name}: {why}" for why in s.skipped)
        if not s.placeholder:
            for port in s.ports:
                numbers.setdefault((port.name, port.protocol), set()).add(port.port)
                seen_ports.setdefault((port.name, port.protocol), port)
        for ep in s.endpoints:
            address = _usable(ep.address, s.family)
            if address is None:
                notes.append(f"slice {s.name}: address {ep.address!r} skipped: not usable")
                continue
            candidate = MergedEndpoint(
                address=address,
                family=s.family,
                ready=ep.ready,
                serving=ep.serving,
                terminating=ep.terminating,
                node=ep.node,
                zone=ep.zone,
                ports=s.ports,
                slice=s.name,
            )
            key = (s.family, address)
            held = chosen.get(key)
            if held is None or _RANK[candidate.eligibility] > _RANK[held.eligibility]:
                chosen[key] = candidate
    agreed = tuple(seen_ports[key] for key in sorted(numbers) if len(numbers[key]) == 1)
    return Merged(
        endpoints=tuple(chosen[k] for k in sorted(chosen)),
        ports=agreed,
        notes=tuple(notes),
    )


def address_mode(service: KubeService, settings: ServiceSettings) -> AddressMode:
    if settings.address_mode is not None:
        return settings.address_mode
    return "loadbalancer" if service.type == "LoadBalancer" else "pods"


def _ports(ports: Iterable[SlicePort], notes: list[str]) -> tuple[Port, ...]:
    out: list[Port] = []
    for p in ports:
        if p.protocol not in _PROTOCOLS or (p.name and not is_label(p.name)):
            notes.append(f"port {p.name or '(unnamed)'}/{p.protocol} skipped: not representable")
            continue
        out.append(Port(name=p.name, port=p.port, protocol=p.protocol))
    if len(out) > MAX_PORTS:
        notes.append(f"{len(out)} ports; the registry keeps {MAX_PORTS}: the first are reported")
    return tuple(out[:MAX_PORTS])


Verdict = Callable[[MergedEndpoint], ProbeState | None]


@dataclass(frozen=True, slots=True)
class Record:
    service: Service
    notes: tuple[str, ...] = ()


def record(
    service: KubeService, settings: ServiceSettings, merged: Merged, verdict: Verdict
) -> Record:
    """The registry record for one exported Service in one cluster."""
    notes = list(merged.notes)
    if address_mode(service, settings) == "loadbalancer":
        endpoints, ports = _loadbalancer(service, settings, merged, verdict, notes)
    else:
        endpoints, ports = _pods(merged, verdict, notes)
    if len(endpoints) > MAX_ENDPOINTS_PER_SERVICE:
        notes.append(
            f"{len(endpoints)} endpoints; the registry keeps {MAX_ENDPOINTS_PER_SERVICE}: "
            "the most eligible are reported"
        )
        endpoints = endpoints[:MAX_ENDPOINTS_PER_SERVICE]
    return Record(
        Service(
            namespace=service.namespace,
            name=service.name,
            ports=ports,
            endpoints=tuple(endpoints),
            ttl=settings.ttl,
            policy=settings.policy,
        ),
        tuple(notes),
    )


def _pods(
    merged: Merged, verdict: Verdict, notes: list[str]
) -> tuple[list[Endpoint], tuple[Port, ...]]:
    service_ports = _ports(merged.ports, notes)
    ranked = sorted(merged.endpoints, key=lambda e: (-_RANK[e.eligibility], e.family, e.address))
    endpoints = []
    for ep in ranked:
        own = _ports(ep.ports, [])
        endpoints.append(
            Endpoint(
                address=ep.address,
                node=ep.node,
                conditions=Conditions(
                    ready=ep.ready, serving=ep.serving, terminating=ep.terminating
                ),
                probe=verdict(ep),
                ports=None if set(own) == set(service_ports) else own,
            )
        )
    return endpoints, service_ports


def ready_count(merged: Merged, verdict: Verdict) -> int:
    """Endpoints that are ready and not failing a probe."""
    count = 0
    for ep in merged.endpoints:
        state = verdict(ep)
        if ep.ready and (state is None or state.healthy):
            count += 1
    return count


def _loadbalancer(
    service: KubeService,
    settings: ServiceSettings,
    merged: Merged,
    verdict: Verdict,
    notes: list[str],
) -> tuple[list[Endpoint], tuple[Port, ...]]:
    ready = ready_count(merged, verdict)
    healthy = ready >= settings.min_ready
    for hostname in service.ingress_hostnames:
        notes.append(f"load-balancer hostname {hostname} skipped: only addresses are served")
    endpoints: list[Endpoint] = []
    for raw in service.ingress_ips:
        try:
            address = ipaddress.ip_address(raw)
        except ValueError:
            notes.append(f"load-balancer address {raw!r} skipped: not an IP address")
            continue
        if _usable(raw, address.version) is None:
            notes.append(f"load-balancer address {raw!r} skipped: not usable")
            continue
        endpoints.append(
            Endpoint(
                address=address.compressed,
                conditions=Conditions(ready=healthy, serving=healthy, terminating=False),
            )
        )
    if not healthy:
        notes.append(
            f"load balancer not ready: {ready} ready endpoints behind it, "
            f"{settings.min_ready} needed"
        )
    unique = {e.address: e for e in endpoints}
    ports = tuple(
        Port(name=p.name, port=p.port, protocol=p.protocol)
        for p in service.ports
        if p.protocol in _PROTOCOLS and (not p.name or is_label(p.name))
    )
    return list(unique.values()), ports[:MAX_PORTS]
