"""Kubernetes objects as globaldns sees them: slim frozen types, translated once from JSON.

Nothing past this module sees a Kubernetes dict. Every field the API marks optional may
be null or absent in what a server sends, so each is read defensively: ``endpoints`` and
``ports`` of a slice (null in the controller's placeholder slice for a Service with no
pods), each condition, ``nodeName``, ``zone``, a port's number.

Condition defaults, from the discovery.k8s.io/v1 ``EndpointConditions`` reference (and
KEP-1672), applied here once:

* ``ready`` nil → true ("unknown state ... interpreted as ready");
* ``serving`` nil → true (v1 text; v1beta1 said "defer to ready", which is also true);
* ``terminating`` nil → false.

Only the first of an endpoint's addresses has defined semantics (the controller always
writes exactly one), so only the first is kept. FQDN slices are deprecated and have no
defined semantics: they are rejected with a reason the caller logs.

A translation that cannot be used returns :class:`Rejected` with the reason, it does not
raise: a malformed object is an expected outcome, and one bad object must not stop a
watch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Key = tuple[str, str]
"""``(namespace, name)`` of an object."""

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True, slots=True)
class Rejected:
    key: Key
    reason: str


@dataclass(frozen=True, slots=True)
class SlicePort:
    name: str
    port: int
    protocol: str = "TCP"
    app_protocol: str | None = None


@dataclass(frozen=True, slots=True)
class SliceEndpoint:
    address: str
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node: str | None = None
    zone: str | None = None
    hostname: str | None = None
    uid: str | None = None
    """``targetRef.uid``: the same pod in an IPv4 and an IPv6 slice shares it."""


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    namespace: str
    name: str
    service: str
    family: int
    """4 or 6 (``addressType`` IPv4 / IPv6)."""
    endpoints: tuple[SliceEndpoint, ...] = ()
    ports: tuple[SlicePort, ...] = ()
    placeholder: bool = False
    """``endpoints: null``: the Service exists and has no endpoints."""
    skipped: tuple[str, ...] = ()
    """Why parts of the slice were left out (endpoints without an address, ports
    without a number)."""

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    @property
    def service_key(self) -> Key:
        return (self.namespace, self.service)


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class KubeService:
    namespace: str
    name: str
    type: str = "ClusterIP"
    annotations: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[ServicePort, ...] = ()
    publish_not_ready: bool = False
    ingress_ips: tuple[str, ...] = ()
    ingress_hostnames: tuple[str, ...] = ()

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class Lease:
    namespace: str
    name: str
    resource_version: str
    holder: str | None = None
    duration_s: int | None = None
    renew_ms: int | None = None
    """``spec.renewTime`` in ms since the epoch (None when unset or unreadable)."""
    transitions: int = 0
    acquire_ms: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)


def _key(raw: Mapping[str, Any]) -> Key:
    meta = raw.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if isinstance(v, str)}


def _flag(conditions: Mapping[str, Any], name: str, default: bool) -> bool:
    value = conditions.get(name)
    return value if isinstance(value, bool) else default


def parse_slice(raw: Mapping[str, Any]) -> EndpointSlice | Rejected:
    key = _key(raw)
    meta = raw.get("metadata") or {}
    service = _str_map(meta.get("labels")).get(SERVICE_NAME_LABEL)
    if not service:
        return Rejected(key, f"no {SERVICE_NAME_LABEL} label: not a Service's slice")
    address_type = raw.get("addressType")
    if address_type == "FQDN":
        return Rejected(key, "FQDN slice: deprecated, no defined semantics; skipped")
    if address_type not in ("IPv4", "IPv6"):
        return Rejected(key, f"unknown addressType {address_type!r}; skipped")
    skipped: list[str] = []
    ports: list[SlicePort] = []
    for raw_port in raw.get("ports") or ():
        number = raw_port.get("port") if isinstance(raw_port, dict) else None
        if not isinstance(number, int) or not 1 <= number <= 65535:
            skipped.append(f"port {raw_port!r}: no usable number")
            continue
        ports.append(
            SlicePort(
                name=str(raw_port.get("name") or ""),
                port=number,
                protocol=str(raw_port.get("protocol") or "TCP"),
                app_protocol=raw_port.get("appProtocol"),
            )
        )
    raw_endpoints = raw.get("endpoints")
    endpoints: list[SliceEndpoint] = []
    for raw_endpoint in raw_endpoints or ():
        addresses = raw_endpoint.get("addresses") if isinstance(raw_endpoint, dict) else None
        if not addresses or not isinstance(addresses[0], str):
            skipped.append("an endpoint without addresses")
            continue
        conditions = raw_endpoint.get("conditions") or {}
        target = raw_endpoint.get("targetRef") or {}
        endpoints.append(
            SliceEndpoint(
                address=addresses[0],
                ready=_flag(conditions, "ready", True),
                serving=_flag(conditions, "serving", True),
                terminating=_flag(conditions, "terminating", False),
                node=raw_endpoint.get("nodeName") or None,
                zone=raw_endpoint.get("zone") or None,
                hostname=raw_endpoint.get("hostname") or None,
                uid=target.get("uid") or None,
            )
        )
    return EndpointSlice(
        namespace=key[0],
        name=key[1],
        service=service,
        family=4 if address_type == "IPv4" else 6,
        endpoints=tuple(endpoints),
        ports=tuple(ports),
        placeholder=raw_endpoints is None,
        skipped=tuple(skipped),
    )


def parse_service(raw: Mapping[str, Any]) -> KubeService | Rejected:
    key = _key(raw)
    if not key[0] or not key[1]:
        return Rejected(key, "a Service without namespace or name")
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    ingress = ((raw.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ()
    ports = tuple(
        ServicePort(
            name=str(p.get("name") or ""),
            port=p["port"],
            protocol=str(p.get("protocol") or "TCP"),
        )
        for p in spec.get("ports") or ()
        if isinstance(p, dict) and isinstance(p.get("port"), int)
    )
    return KubeService(
        namespace=key[0],
        name=key[1],
        type=str(spec.get("type") or "ClusterIP"),
        annotations=_str_map(meta.get("annotations")),
        ports=ports,
        publish_not_ready=bool(spec.get("publishNotReadyAddresses")),
        ingress_ips=tuple(i["ip"] for i in ingress if isinstance(i, dict) and i.get("ip")),
        ingress_hostnames=tuple(
            i["hostname"] for i in ingress if isinstance(i, dict) and i.get("hostname")
        ),
    )


def parse_time_ms(value: Any) -> int | None:
    """An RFC 3339 (Micro)Time as ms since the epoch; None when unset or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


def format_time(ms: int) -> str:
    """ms since the epoch as the API's MicroTime (``2006-01-02T15:04:05.000000Z``)."""
    seconds, rest = divmod(ms, 1000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rest * 1000:06d}Z"


def parse_lease(raw: Mapping[str, Any]) -> Lease | Rejected:
    key = _key(raw)
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    duration = spec.get("leaseDurationSeconds")
    transitions = spec.get("leaseTransitions")
    return Lease(
        namespace=key[0],
        name=key[1],
        resource_version=str(meta.get("resourceVersion") or ""),
        holder=spec.get("holderIdentity") or None,
        duration_s=duration if isinstance(duration, int) else None,
        renew_ms=parse_time_ms(spec.get("renewTime")),
        acquire_ms=parse_time_ms(spec.get("acquireTime")),
        transitions=transitions if isinstance(transitions, int) else 0,
        labels=_str_map(meta.get("labels")),
        annotations=_str_map(meta.get("annotations")),
    )
