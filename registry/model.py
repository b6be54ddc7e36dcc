"""The data model shared by every component: regions, clusters, services, endpoints.

These are frozen pydantic models, so they validate what crosses a trust boundary (an
agent's report, a stored record, a topology file) with messages that name the field, and
can be shared between asyncio tasks without copying. Unknown fields are rejected: a typo
in a report must not silently drop a setting.

An endpoint carries what Kubernetes says about it (``conditions``, with the API's
semantics: a ``None`` ``ready`` means "unknown" and is read as ready, as kube-proxy does)
and what the agent's own active probe says (``probe``). Whether it is *healthy* is
decided in :mod:`registry.health`, not stored.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DNS_LABEL = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_LABEL_RE = re.compile(DNS_LABEL)

Label = Annotated[str, Field(pattern=DNS_LABEL, max_length=63)]

MAX_ENDPOINTS_PER_SERVICE = 256
MAX_SERVICES_PER_CLUSTER = 1000


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Region(Frozen):
    """A geographic region with coordinates, for distance ordering."""

    name: Label
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)


class Port(Frozen):
    """A named port of a service, as in an EndpointSlice's ``ports``."""

    name: str = Field(default="", pattern=r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)?$")
    port: int = Field(ge=1, le=65535)
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"


class Conditions(Frozen):
    """EndpointSlice conditions, stored as given (``None`` = not set by the API)."""

    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None


class ProbeState(Frozen):
    """The agent's active-probe verdict for one endpoint, after rise/fall smoothing."""

    healthy: bool
    detail: str = Field(default="", max_length=200)


class Endpoint(Frozen):
    """One address of a service in one cluster."""

    address: str
    node: str | None = Field(default=None, max_length=253)
    conditions: Conditions = Conditions()
    probe: ProbeState | None = None

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None
        if ip.is_unspecified or ip.is_multicast or ip.is_link_local:
            raise ValueError(f"{value} is not a unicast address an endpoint can have")
        return ip.compressed

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.address).version


class Service(Frozen):
    """A service as one cluster exports it: ``<name>.<namespace>``."""

    namespace: Label
    name: Label
    ports: tuple[Port, ...] = ()
    endpoints: tuple[Endpoint, ...] = Field(default=(), max_length=MAX_ENDPOINTS_PER_SERVICE)
    ttl: int | None = Field(default=None, ge=1, le=300, description="answer TTL in seconds")

    @property
    def key(self) -> str:
        return service_key(self.namespace, self.name)

    @model_validator(mode="after")
    def _unique_addresses(self) -> Service:
        seen: set[str] = set()
        for endpoint in self.endpoints:
            if endpoint.address in seen:
                raise ValueError(f"endpoint address {endpoint.address} is listed twice")
            seen.add(endpoint.address)
        return self


class Report(Frozen):
    """An agent's whole-state report for its cluster.

    ``cluster`` is optional: the registry takes the cluster from the credential, and
    refuses a report that names another one. ``seq`` orders reports from one cluster: a
    delayed or retried older report never overwrites a newer one.
    """

    cluster: Label | None = None
    seq: int = Field(ge=0, description="monotonically increasing per cluster (ns since epoch)")
    services: tuple[Service, ...] = Field(default=(), max_length=MAX_SERVICES_PER_CLUSTER)

    @model_validator(mode="after")
    def _unique_services(self) -> Report:
        keys = [service.key for service in self.services]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        if duplicates:
            raise ValueError(f"services listed twice: {', '.join(duplicates)}")
        return self


class Heartbeat(Frozen):
    """A lease renewal: names the report the agent believes the registry holds."""

    seq: int = Field(ge=0)


class Drain(Frozen):
    """An operator's decision to take a cluster out of the answers."""

    reason: str = Field(default="", max_length=500)
    by: str = Field(default="", max_length=100)
    at_ms: int = 0


class ClusterState(Frozen):
    """What the registry holds for one cluster: its records, lease and drain."""

    name: Label
    region: Label
    seq: int = 0
    last_seen_ms: int = 0
    services: tuple[Service, ...] = ()
    drain: Drain | None = None


class RegistryView(Frozen):
    """A consistent read of the whole registry, as of Redis time ``now_ms``."""

    generation: int
    now_ms: int
    clusters: tuple[ClusterState, ...]
    stream_id: str = "0-0"


def service_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def is_label(value: str) -> bool:
    return bool(_LABEL_RE.match(value))
