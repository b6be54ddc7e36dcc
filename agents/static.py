"""A static source: one YAML file per cluster listing services, endpoints and probes.

It serves VMs, bare-metal pools and dev mode. Its shape::

    services:
      - namespace: production
        name: api
        ports: [{name: http, port: 8080, protocol: TCP}]
        probe: {port: 8080, interval_s: 1, timeout_s: 0.5, rise: 2, fall: 2}   # optional
        endpoints:
          - {address: 10.0.1.5, node: node-a}
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import Field, ValidationError

from registry.errors import ConfigError
from registry.model import Frozen, Label, Port
from registry.topology import describe


class ProbeSpec(Frozen):
    port: int = Field(ge=1, le=65535, description="TCP port dialled on each endpoint")
    interval_s: float = Field(default=1.0, gt=0, le=300)
    timeout_s: float = Field(default=0.5, gt=0, le=60)
    rise: int = Field(default=2, ge=1, le=100, description="passes in a row to turn healthy")
    fall: int = Field(default=2, ge=1, le=100, description="failures in a row to turn unhealthy")


class EndpointSpec(Frozen):
    address: str
    node: str | None = None
    ready: bool = True


class ServiceSpec(Frozen):
    namespace: Label
    name: Label
    ports: tuple[Port, ...] = ()
    ttl: int | None = Field(default=None, ge=1, le=300)
    probe: ProbeSpec | None = None
    endpoints: tuple[EndpointSpec, ...] = ()


class StaticSource(Frozen):
    services: tuple[ServiceSpec, ...] = ()


def load(path: Path) -> StaticSource:
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the static source: {exc}") from exc
    try:
        return StaticSource.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe(exc)}") from exc
