"""An agent's settings: one typed object, read from ``GLOBALDNS_*`` variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GLOBALDNS_", extra="ignore", frozen=True)

    cluster: str = Field(description="the cluster this agent reports for (its token must match)")
    registry_url: str = Field(
        default="http://127.0.0.1:8080", description="base URL of the registry API"
    )
    token: SecretStr = Field(description="this cluster's bearer token for the registry API")
    registry_ca_file: Path | None = Field(
        default=None,
        description="CA bundle (PEM) that an https:// registry's certificate is verified "
        "against; none: the system's trust store",
    )
    source: Path = Field(description="static source file: services, endpoints, probes")
    registry_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="the longest one call to the registry API may take; keep it above the "
        "registry's GLOBALDNS_REDIS_TIMEOUT_S (0.75 s), so that a registry whose Redis is "
        "frozen answers 503 (retried) before the agent gives up on it",
    )
    heartbeat_interval_s: float = Field(
        default=2.0, gt=0, description="lease renewal period; keep it a third of the lease TTL"
    )
    log_json: bool = Field(default=True, description="JSON logs (false: console lines)")
