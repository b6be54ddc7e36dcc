"""The registry API's settings: one typed object, read from ``GLOBALDNS_*`` variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from registry import topology as topology_mod
from registry.model import MAX_CLUSTERS, MAX_ENDPOINTS_PER_SERVICE, MAX_SERVICES_PER_CLUSTER


class RegistrySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GLOBALDNS_", extra="ignore", frozen=True)

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis (or Valkey) primary the registry writes to",
    )
    host: str = Field(default="127.0.0.1", description="address the HTTP API listens on")
    port: int = Field(default=8080, ge=0, le=65535, description="port of the HTTP API (0: any)")
    topology: Path = Field(
        default_factory=topology_mod.default_path,
        description="regions, clusters and client networks (the cluster's region comes from here)",
    )
    cluster_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="bearer token per cluster, as JSON: the only proof of which cluster reports",
    )
    admin_token: SecretStr | None = Field(
        default=None, description="bearer token for admin calls (drain); none: admin calls refused"
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
    max_clusters: int = Field(
        default=MAX_CLUSTERS, ge=1, description="clusters the topology may list"
    )
    resolver_url: str | None = Field(
        default=None, description="a resolver's HTTP base URL, asked by GET /v1/explain"
    )
    log_json: bool = Field(default=True, description="JSON logs (false: console lines)")
