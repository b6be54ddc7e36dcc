"""The data model shared by every component: regions, clusters, services, endpoints.

These are frozen pydantic models, so they validate what crosses a trust boundary (an
agent's report, a stored record, a topology file) with messages that name the field, and
can be shared between asyncio tasks without copying. Unknown fields are rejected: a typo
in a report must not silently drop a setting.

An endpoint carries what Kubernetes says about it (``conditions``, with the API's
semantics: a ``None`` ``ready`` means "unknown" and is read as ready, as kube-proxy does)
and what the agent's own active probe says (``probe``). Whether it is *healthy* is
decided in :mod:`registry.health`, not stored. Which addresses it may have is decided in
:mod:`registry.addresses`.

Every list and string has a bound, so the cost of a record — to validate, store, and
answer from — is bounded by the model and not only by the request size. The registry
parses reports in pydantic's strict mode (``"80"`` is not a port, ``1.0`` not a count,
``"true"`` not a condition), with an :class:`Admission` as validation context: whether
loopback endpoints are admitted is the registry's setting, not the model's. Code that
builds models itself (the agents) and readers of stored records pass no context; readers
use :func:`read_service`, which leaves out an endpoint this version refuses instead of
the whole record.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import socket
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from registry import addresses
from registry.badrecords import BadRecord

DNS_LABEL = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_LABEL_RE = re.compile(DNS_LABEL)
_SERVICE_KEY_RE = re.compile(DNS_LABEL.removesuffix("$") + "/" + DNS_LABEL.removeprefix("^"))

Label = Annotated[str, Field(pattern=DNS_LABEL, max_length=63)]
ServiceKey = Annotated[
    str,
    Field(
        pattern=DNS_LABEL.removesuffix("$") + "/" + DNS_LABEL.removeprefix("^"),
        max_length=127,
        description="<namespace>/<name>",
    ),
]

# Defaults of the registry's limits (each one a setting of the registry API, which
# answers 413 naming the limit and the value when a report exceeds it). The models
# themselves only enforce ceilings far above them, so that a bigger setting works.
MAX_ENDPOINTS_PER_SERVICE = 1000
MAX_SERVICES_PER_CLUSTER = 10_000
MAX_CLUSTERS = 100
_CEILING_ENDPOINTS = 100_000
_CEILING_SERVICES = 1_000_000
MAX_PORTS = 100
"""Ports per service and per endpoint: an EndpointSlice holds at most 100."""
MAX_WEIGHTS = 1000
MAX_INT64 = 2**63 - 1
"""Sequence numbers and times are stored as Redis integers (64-bit signed)."""


@dataclass(frozen=True, slots=True)
class Admission:
    """What the registry admits, passed as pydantic validation context of a report
    (``Report.model_validate_json(raw, strict=True, context=Admission(...))``).

    Without it (an agent building its report, a reader of stored records) loopback
    endpoints are valid: dev mode's agents report them, and what is stored was admitted
    by a registry that allowed them. Every other refusal in :mod:`registry.addresses`
    holds everywhere.
    """

    loopback: bool = False
    """``GLOBALDNS_ALLOW_LOOPBACK_ENDPOINTS``: loopback endpoints are admitted."""


def _loopback_allowed(info: ValidationInfo) -> bool:
    context = info.context
    return not isinstance(context, Admission) or context.loopback


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Region(Frozen):
    """A geographic region with coordinates, for distance ordering."""

    name: Label
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    jurisdiction: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9-]{1,32}$",
        description="legal area for residency fences (e.g. eu); none: unfenced",
    )


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

    address: str = Field(max_length=64, description="unicast IPv4 or IPv6, no zone index")
    node: str | None = Field(default=None, max_length=253)
    conditions: Conditions = Conditions()
    probe: ProbeState | None = None
    ports: tuple[Port, ...] | None = Field(
        default=None,
        max_length=MAX_PORTS,
        description="this endpoint's own ports (its EndpointSlice's, for SRV) where they "
        "differ from the service's; None: the service's ports",
    )

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str, info: ValidationInfo) -> str:
        if _plain_ipv4(value):
            return value
        return addresses.check(value, loopback=_loopback_allowed(info))

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.address).version


def _plain_ipv4(value: str) -> bool:
    """The common case, checked without building an ``ipaddress`` object (a resolver
    validates every stored endpoint when it loads): a dotted quad that is already in
    canonical form and outside every range :mod:`registry.addresses` refuses or allows
    only sometimes (0/8, loopback, link-local, multicast and above). False: take the
    general path, which also explains what is wrong."""
    try:
        packed = _inet_pton(_AF_INET, value)
    except OSError:
        return False
    first = packed[0]
    if first == 0 or first == 127 or first >= 224 or (first == 169 and packed[1] == 254):
        return False
    return _inet_ntop(_AF_INET, packed) == value


_AF_INET, _inet_pton, _inet_ntop = socket.AF_INET, socket.inet_pton, socket.inet_ntop


PolicyKind = Literal["geo", "failover", "weighted", "all", "residency"]
AllUnhealthy = Literal["last_known_good", "all", "none"]


class Policy(Frozen):
    """How a service's answers are chosen (see ``resolver.policy`` for each kind)."""

    kind: PolicyKind = "geo"
    order: tuple[Label, ...] = Field(
        default=(), max_length=64, description="failover: clusters or regions, first preferred"
    )
    weights: dict[Label, int] = Field(
        default_factory=dict,
        max_length=MAX_WEIGHTS,
        description="weighted: cluster -> weight (0 to 10000)",
    )
    min_healthy: int = Field(
        default=1, ge=1, le=1000, description="spill past a region with fewer healthy endpoints"
    )
    min_healthy_fraction: float = Field(
        default=0.0, ge=0, le=1, description="spill past a region with a smaller healthy share"
    )
    spill_hold_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="a spilled region must have enough capacity this long to come back",
    )
    when_all_unhealthy: AllUnhealthy = Field(
        default="last_known_good",
        description="answer when nothing is healthy: last_known_good, all, or none (NODATA)",
    )

    @model_validator(mode="after")
    def _complete(self) -> Policy:
        if self.kind == "failover" and not self.order:
            raise ValueError("a failover policy needs 'order': clusters or regions to try")
        if self.kind == "weighted":
            if not self.weights or sum(self.weights.values()) <= 0:
                raise ValueError("a weighted policy needs 'weights' with a positive total")
            if any(not 0 <= w <= 10000 for w in self.weights.values()):
                raise ValueError("weights are whole numbers from 0 to 10000")
        return self

    @property
    def capacity_aware(self) -> bool:
        return self.min_healthy > 1 or self.min_healthy_fraction > 0


class PolicyOverride(Frozen):
    """An operator's policy for a service, set through the API; wins over annotations."""

    policy: Policy
    reason: str = Field(default="", max_length=500)
    by: str = Field(default="", max_length=100)
    at_ms: int = Field(default=0, ge=0, le=MAX_INT64)


class Service(Frozen):
    """A service as one cluster exports it: ``<name>.<namespace>``."""

    namespace: Label
    name: Label
    ports: tuple[Port, ...] = Field(default=(), max_length=MAX_PORTS)
    endpoints: tuple[Endpoint, ...] = Field(default=(), max_length=_CEILING_ENDPOINTS)
    ttl: int | None = Field(default=None, ge=1, le=300, description="answer TTL in seconds")
    policy: Policy | None = Field(
        default=None, description="from the service's globaldns.io/* annotations"
    )

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
    """An agent's report for its cluster: the whole state, or a delta on top of one.

    ``cluster`` is optional: the registry takes the cluster from the credential, and
    refuses a report that names another one. ``seq`` orders reports from one cluster: a
    delayed or retried older report never overwrites a newer one.

    Without ``base_seq`` the report is the cluster's whole state: what it does not list
    is removed. With ``base_seq`` it is a *delta*: ``services`` are upserted whole,
    ``removed`` are deleted, and everything else stays; the registry applies it only if
    the report it holds is exactly ``base_seq`` (anything else answers 409 with
    ``resync``, and the agent sends its whole state again).
    """

    cluster: Label | None = None
    seq: int = Field(
        ge=0, le=MAX_INT64, description="monotonically increasing per cluster (ns since epoch)"
    )
    base_seq: int | None = Field(
        default=None,
        ge=0,
        le=MAX_INT64,
        description="delta: the seq of the report this one builds on",
    )
    services: tuple[Service, ...] = Field(default=(), max_length=_CEILING_SERVICES)
    removed: tuple[ServiceKey, ...] = Field(
        default=(), max_length=_CEILING_SERVICES, description="delta: services to delete"
    )
    observed_ms: int | None = Field(
        default=None,
        ge=0,
        le=MAX_INT64,
        description="wall-clock ms at which the agent observed the oldest change in this "
        "report (for the propagation histograms)",
    )

    @property
    def is_delta(self) -> bool:
        return self.base_seq is not None

    @model_validator(mode="after")
    def _consistent(self) -> Report:
        seen: set[str] = set()
        duplicates: set[str] = set()
        for service in self.services:
            (duplicates if service.key in seen else seen).add(service.key)
        if duplicates:
            raise ValueError(f"services listed twice: {', '.join(sorted(duplicates)[:10])}")
        if self.base_seq is None:
            if self.removed:
                raise ValueError("'removed' belongs to a delta (a report with base_seq)")
            return self
        if self.base_seq >= self.seq:
            raise ValueError(f"base_seq {self.base_seq} must be below seq {self.seq}")
        both = sorted(set(self.removed) & seen)
        if both:
            raise ValueError(f"services both upserted and removed: {', '.join(both[:10])}")
        if len(set(self.removed)) != len(self.removed):
            raise ValueError("a service is listed twice in 'removed'")
        return self


class Heartbeat(Frozen):
    """A lease renewal: names the report the agent believes the registry holds."""

    seq: int = Field(ge=0, le=MAX_INT64)


class Drain(Frozen):
    """An operator's decision to take a cluster out of the answers."""

    reason: str = Field(default="", max_length=500)
    by: str = Field(default="", max_length=100)
    at_ms: int = Field(default=0, ge=0, le=MAX_INT64)


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
    policies: dict[str, PolicyOverride] = Field(default_factory=dict)
    """Operator overrides by ``<namespace>/<name>``."""
    problems: tuple[BadRecord, ...] = ()
    """What the read skipped because it could not read it (:mod:`registry.badrecords`)."""


def read_service(raw: str | bytes) -> Service | None:
    """A stored service record, as a reader takes it: an endpoint this version refuses
    (say an address stored before :mod:`registry.addresses` refused its kind) is left
    out rather than the whole record, so one bad endpoint never takes the others out of
    the answers. None: the record itself is unreadable (the next report replaces it).
    """
    try:
        return Service.model_validate_json(raw)
    except ValidationError as exc:
        where = [_endpoint_index(e["loc"]) for e in exc.errors()]
    if None in where:
        return None  # something besides an endpoint is wrong
    document: Any = json.loads(raw)
    document["endpoints"] = [e for i, e in enumerate(document["endpoints"]) if i not in where]
    try:
        return Service.model_validate(document)
    except ValidationError:
        return None


def _endpoint_index(loc: tuple[int | str, ...]) -> int | None:
    """The index of the endpoint a validation error is in (``endpoints.<i>...``)."""
    if len(loc) >= 2 and loc[0] == "endpoints" and isinstance(loc[1], int):
        return loc[1]
    return None


def service_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def is_label(value: str) -> bool:
    return bool(_LABEL_RE.fullmatch(value))


def is_service_key(value: str) -> bool:
    """Whether ``value`` is a ``<namespace>/<name>`` (as every stored service is keyed)."""
    return bool(_SERVICE_KEY_RE.fullmatch(value))


def content_hash(service: Service) -> str:
    """A digest of what a service record says, independent of its endpoints' order.

    The registry stores it beside each record and writes (and announces) a service only
    when its digest changes, so an unchanged cluster reporting its whole state again
    causes no churn downstream; resolvers compare digests to resync cheaply.
    """
    ordered = service.model_copy(
        update={"endpoints": tuple(sorted(service.endpoints, key=lambda e: e.address))}
    )
    return hashlib.blake2b(ordered.model_dump_json().encode(), digest_size=12).hexdigest()
