"""The registry API's settings: one typed object, read from ``GLOBALDNS_*`` variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from registry import auth
from registry import topology as topology_mod
from registry.connection import RedisOptions
from registry.httpguard import ConnectionLimits
from registry.limits import Rate
from registry.model import MAX_CLUSTERS, MAX_ENDPOINTS_PER_SERVICE, MAX_SERVICES_PER_CLUSTER


class RegistrySettings(RedisOptions):
    model_config = SettingsConfigDict(env_prefix="GLOBALDNS_", extra="ignore", frozen=True)

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis (or Valkey) primary the registry writes to: redis://host:port/db, "
        "or redis+sentinel://host:port,host:port/service/db (registry/connection.py)",
    )
    redis_timeout_s: float = Field(
        default=0.75,
        gt=0,
        le=4.0,
        description="the longest one Redis call of an API request may take (connecting, "
        "retries and failover waits included); past it the request answers 503 and the agent "
        "sends again. Keep it under the agents' GLOBALDNS_REGISTRY_TIMEOUT_S (5 s) so a frozen "
        "Redis is a quick 503, never an agent timeout. A whole state too large to write in "
        "this time answers 503 while its script still completes, so the retry finds nothing "
        "left to write; raise it for clusters of many thousand services",
    )
    host: str = Field(default="127.0.0.1", description="address the HTTP API listens on")
    port: int = Field(default=8080, ge=0, le=65535, description="port of the HTTP API (0: any)")
    topology: Path = Field(
        default_factory=topology_mod.default_path,
        description="regions, clusters and client networks (the cluster's region comes from here)",
    )
    cluster_tokens: dict[str, tuple[SecretStr, ...]] = Field(
        default_factory=dict,
        description="bearer token per cluster, as JSON: the only proof of which cluster "
        'reports; {"<cluster>": "<token>"} or up to two, {"<cluster>": ["<new>", "<old>"]}, '
        "while rotating; each sha256:<hex> (globaldns token new) or, in dev, the token itself",
    )
    admin_token: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        default=(),
        description="bearer token for admin calls (drains, overrides, explain for any client); "
        "up to two, comma-separated, while rotating; sha256:<hex> or the token; none: admin "
        "calls refused",
    )
    read_token: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        default=(),
        description="bearer token for the inspection routes (clusters, services, drains); up "
        "to two, comma-separated; none: those routes are open (the admin token also reads)",
    )
    tls_cert_file: Path | None = Field(
        default=None, description="serve HTTPS with this certificate chain (PEM)"
    )
    tls_key_file: Path | None = Field(
        default=None, description="the private key of GLOBALDNS_TLS_CERT_FILE (PEM)"
    )

    @field_validator("cluster_tokens", mode="before")
    @classmethod
    def _one_or_two(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        return {k: (v,) if isinstance(v, str | SecretStr) else v for k, v in value.items()}

    @field_validator("admin_token", "read_token", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if value is None:
            return ()
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            return auth.split(value)
        return value

    def tokens(self) -> auth.Tokens:
        """The configured tokens as digests; ValueError naming the setting when one is bad."""
        return auth.Tokens.from_config(
            {c: [t.get_secret_value() for t in ts] for c, ts in self.cluster_tokens.items()},
            [t.get_secret_value() for t in self.admin_token],
            [t.get_secret_value() for t in self.read_token],
        )

    lease_ttl_s: float = Field(
        default=6.0, gt=0, description="a cluster whose last heartbeat is older is unhealthy"
    )
    max_body_bytes: int = Field(
        default=1 << 20, ge=1024, description="largest request body accepted, reports aside"
    )
    max_report_bytes: int = Field(
        default=64 << 20,
        ge=1024,
        description="largest report accepted, after gzip: a whole state of 100,000 endpoints "
        "is about 10 MB of JSON",
    )
    max_services_per_cluster: int = Field(
        default=MAX_SERVICES_PER_CLUSTER, ge=1, description="services one cluster may export"
    )
    max_endpoints_per_service: int = Field(
        default=MAX_ENDPOINTS_PER_SERVICE,
        ge=1,
        description="endpoints per service per cluster (answers still carry at most 8)",
    )
    allow_loopback_endpoints: bool = Field(
        default=False,
        description="admit endpoints on loopback addresses (127.0.0.0/8, ::1): only for "
        "dev mode and tests, whose simulated endpoints listen there; a real registry refuses "
        "them (they would send every client to itself)",
    )
    http_idle_timeout_s: float = Field(
        default=20.0,
        gt=0,
        description="close a connection with no request under way this long after it "
        "opened or answered (keep-alive). Above the agents' heartbeat interval (2 s), so "
        "their connections are reused, and above aiohttp's client keep-alive (15 s), so "
        "the client closes first and never sends on a connection being closed",
    )
    http_header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="a request's head (request line and headers) must arrive this long "
        "after its first byte, or the connection is closed (slowloris)",
    )
    http_body_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="a request's body must arrive this long after its head: 408 and the "
        "connection closed. Agents give a call 5 s in all (GLOBALDNS_REGISTRY_TIMEOUT_S)",
    )
    http_write_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="a response the client does not read for this long (the socket's "
        "buffer stays full) is abandoned and the connection aborted",
    )
    http_max_connections: int = Field(
        default=512,
        ge=1,
        description="HTTP connections held at once; keep it below the process's file "
        "limit (ulimit -n). Over it, a new connection closes the one longest without a "
        "request (never one with a request under way), and is refused with 503 only when "
        "all are busy",
    )
    report_rate: float = Field(
        default=20.0,
        ge=0,
        description="reports one cluster may send a second, sustained (token bucket; "
        "heartbeats are never limited). Over it: 429 with Retry-After. An agent sends at "
        "most one report per 50 ms. 0: no limit",
    )
    report_burst: float = Field(
        default=40.0, ge=1, description="reports one cluster may send at once, above the rate"
    )
    report_bytes_per_token: int = Field(
        default=256 << 10,
        ge=1024,
        description="a report costs one token, plus one per this many bytes of body (after "
        "gzip): a 10 MB whole state is admitted, and the cluster's next reports wait about "
        "two seconds (at the default rate) while it is paid for",
    )
    max_clusters: int = Field(
        default=MAX_CLUSTERS, ge=1, description="clusters the topology may list"
    )
    state_dir: Path | None = Field(
        default=None,
        description="where operator decisions (drains, overrides) are journaled, on a "
        "persistent volume: a Redis that loses its data gets them back from here. None: "
        "kept in this process's memory only (they survive Redis, not a registry restart)",
    )
    resolver_url: str | None = Field(
        default=None, description="a resolver's HTTP base URL, asked by GET /v1/explain"
    )
    status_streams: int = Field(
        default=100,
        ge=0,
        description="browsers the status page (GET /status) streams live updates to at once; "
        "past it a stream is refused with 503 and the page retries (0: no live updates). One "
        "reader serves them all, so each costs a socket and its share of the bytes",
    )
    log_json: bool = Field(default=True, description="JSON logs (false: console lines)")

    def connection_limits(self) -> ConnectionLimits:
        return ConnectionLimits(
            idle_timeout_s=self.http_idle_timeout_s,
            header_timeout_s=self.http_header_timeout_s,
            write_timeout_s=self.http_write_timeout_s,
            max_connections=self.http_max_connections,
        )

    def report_limit(self) -> Rate:
        return Rate(
            per_s=self.report_rate,
            burst=self.report_burst,
            bytes_per_token=self.report_bytes_per_token,
        )
