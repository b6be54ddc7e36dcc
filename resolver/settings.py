"""The resolver's settings: one typed object, read from ``GLOBALDNS_*`` variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from registry import addresses, auth
from registry import topology as topology_mod
from registry.connection import ReadFrom, RedisOptions


def _default_nameservers() -> dict[str, tuple[str, ...]]:
    return {"ns1.global.example.com": ("127.0.0.1",)}


class ResolverSettings(RedisOptions):
    model_config = SettingsConfigDict(env_prefix="GLOBALDNS_", extra="ignore", frozen=True)

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis to read the registry from; a local replica is enough; or "
        "redis+sentinel://host:port,host:port/service/db (registry/connection.py)",
    )
    redis_read_from: ReadFrom = Field(
        default="primary",
        description="with Sentinel: read from the primary or from a replica (which falls back "
        "to another replica, then to the primary, when it dies); replicas may lag a little",
    )
    dns_host: str = Field(default="127.0.0.1", description="address the DNS server listens on")
    dns_port: int = Field(default=5353, ge=0, le=65535, description="UDP and TCP port (0: any)")
    http_host: str = Field(default="127.0.0.1", description="address of /healthz, /readyz")
    http_port: int = Field(default=8053, ge=0, le=65535, description="port of the HTTP side")
    topology: Path = Field(
        default_factory=topology_mod.default_path,
        description="regions (coordinates) and client networks (CIDR → region)",
    )
    geoip_database: Path | None = Field(
        default=None,
        description="MaxMind-format city database; clients no network matches go to the "
        "region nearest to where it places them",
    )
    zone: str = Field(default="global.example.com", description="the zone answered for")
    ttl: int = Field(default=5, ge=0, le=3600, description="TTL of answers a service sets none for")
    negative_ttl: int = Field(
        default=5, ge=0, le=3600, description="SOA minimum: how long NXDOMAIN/NODATA are cached"
    )
    nameservers: dict[str, tuple[str, ...]] = Field(
        default_factory=_default_nameservers,
        description="NS names of the zone, as JSON; in-zone names with their addresses",
    )
    lease_ttl_s: float = Field(
        default=6.0, gt=0, description="a cluster whose last heartbeat is older is unhealthy"
    )

    @field_validator("nameservers")
    @classmethod
    def _nameserver_addresses(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        # Answered as A/AAAA and written to zone files: the endpoints' rules, loopback
        # allowed (a resolver on one host, dev mode).
        return {
            name: tuple(addresses.check(a, loopback=True) for a in listed)
            for name, listed in value.items()
        }

    mass_expiry_fraction: float = Field(
        default=0.5,
        ge=0,
        lt=1,
        description="when more than this share of the live clusters go stale at once, "
        "blame the control plane and keep the last picture (as Kubernetes stops evicting "
        "when a zone goes NotReady)",
    )
    resync_interval_s: float = Field(
        default=30.0, gt=0, description="full reload from Redis this often, besides the stream"
    )
    max_snapshot_age_s: float | None = Field(
        default=None,
        ge=0,
        description="/readyz answers 503 once the registry has not been read for this long "
        "(Redis unreachable, or the sync failing); DNS keeps answering from the snapshot "
        "meanwhile. Default: twice resync_interval_s, and at least 30 s (a follow round "
        "settles every second; a reconcile of a large registry takes a few); 0: never",
    )
    tcp_idle_timeout_s: float = Field(
        default=5.0, gt=0, description="close a TCP connection idle this long (RFC 7766)"
    )
    tcp_read_timeout_s: float = Field(
        default=2.0, gt=0, description="close a TCP connection that stalls inside a message"
    )
    tcp_write_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="close a TCP connection whose client has not taken an answer this long "
        "(it does not read: the socket's buffers are full); also how long a shutdown "
        "waits for connections to send what they have",
    )
    tcp_max_connections: int = Field(
        default=1024,
        ge=1,
        description="TCP connections in total; when full, a new client takes a connection "
        "from the source holding the most (if it holds two more than the newcomer)",
    )
    tcp_max_per_source: int = Field(
        default=32, ge=1, description="TCP connections per source: an IPv4 address, an IPv6 /64"
    )
    nsid: str | None = Field(
        default=None,
        description="returned to queries that ask for NSID (RFC 5001); default: none",
    )
    ecs_trusted: tuple[str, ...] = Field(
        default=(),
        description="sources whose EDNS Client Subnet is used to locate the client, as JSON "
        '(e.g. your CoreDNS or Unbound forwarders: ["10.0.0.0/8"]); default: none, so a '
        "client cannot claim to ask from elsewhere; dev mode trusts loopback",
    )
    cookie_secret: str | None = Field(
        default=None,
        description="key for server cookies (RFC 7873); default: a random one per process",
    )
    explain_trusted: tuple[str, ...] = Field(
        default=(
            "127.0.0.0/8",
            "::1/128",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "fc00::/7",
        ),
        description="sources that may ask TXT _explain.<name>, as JSON (a trace shows health)",
    )
    admin_token: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        default=(),
        description="the registry's admin token (sha256:<hex> or the token; up to two, "
        "comma-separated): GET /v1/explain for another client than the caller needs it; "
        "none: only callers in GLOBALDNS_EXPLAIN_TRUSTED, for themselves",
    )

    rrl_rate: float = Field(
        default=100.0,
        ge=0,
        description="UDP responses a second per client /24 (/56) and name; 0: no RRL",
    )
    rrl_window_s: float = Field(default=15.0, gt=0, le=3600, description="RRL window")
    rrl_slip: int = Field(
        default=2, ge=0, le=10, description="every Nth limited reply goes out as TC=1"
    )
    rrl_log_only: bool = Field(default=False, description="count what RRL would limit, only")
    rrl_exempt: tuple[str, ...] = Field(
        default=(),
        description="client networks never rate limited (your clusters' CoreDNS), as JSON",
    )
    log_json: bool = Field(default=True, description="JSON logs (false: console lines)")

    @property
    def snapshot_age_bound_s(self) -> float | None:
        """The snapshot age past which the resolver is not ready (None: no bound)."""
        if self.max_snapshot_age_s is None:
            return max(30.0, 2 * self.resync_interval_s)
        return self.max_snapshot_age_s or None

    @field_validator("admin_token", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if value is None:
            return ()
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        return auth.split(value) if isinstance(value, str) else value
