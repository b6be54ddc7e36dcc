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

from collections.abc import Collection, Mapping
from pathlib import Path

import yaml
from pydantic import Field, ValidationError, field_validator

from agents.source import Check, Notify, ProbeJob, Target, VerdictKey
from registry import addresses
from registry.errors import ConfigError
from registry.model import (
    MAX_PORTS,
    Conditions,
    Endpoint,
    Frozen,
    Label,
    Policy,
    Port,
    ProbeState,
    Service,
)
from registry.topology import describe


class ProbeSpec(Frozen):
    port: int = Field(ge=1, le=65535, description="TCP port dialled on each endpoint")
    interval_s: float = Field(default=1.0, gt=0, le=300)
    timeout_s: float = Field(default=0.5, gt=0, le=60)
    rise: int = Field(default=2, ge=1, le=100, description="passes in a row to turn healthy")
    fall: int = Field(default=2, ge=1, le=100, description="failures in a row to turn unhealthy")


class EndpointSpec(Frozen):
    address: str = Field(max_length=64)
    node: str | None = Field(default=None, max_length=253)
    ready: bool = True

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        # Judged when the file is read, not when the first report is built; loopback is
        # the registry's to refuse (dev mode's endpoints are loopback listeners).
        return addresses.check(value, loopback=True)


class ServiceSpec(Frozen):
    namespace: Label
    name: Label
    ports: tuple[Port, ...] = Field(default=(), max_length=MAX_PORTS)
    ttl: int | None = Field(default=None, ge=1, le=300)
    policy: Policy | None = Field(default=None, description="routing policy (as annotations)")
    probe: ProbeSpec | None = None
    endpoints: tuple[EndpointSpec, ...] = ()


class StaticSource(Frozen):
    services: tuple[ServiceSpec, ...] = ()


class StaticFeed:
    """A static file as an agent's :class:`agents.source.Source`: always ready, always
    the reporter (one agent per static cluster), its probe jobs fixed. The file is read
    once, so it never notifies; a reread would be a whole-file change (``None``)."""

    def __init__(self, source: StaticSource) -> None:
        self.source = source
        self._jobs = {
            f"{spec.namespace}/{spec.name}": ProbeJob(
                check=Check(
                    interval_s=spec.probe.interval_s,
                    timeout_s=spec.probe.timeout_s,
                    rise=spec.probe.rise,
                    fall=spec.probe.fall,
                ),
                targets=tuple(Target(ep.address, spec.probe.port) for ep in spec.endpoints),
            )
            for spec in source.services
            if spec.probe is not None
        }

    def subscribe(self, notify: Notify) -> None:
        return None

    def ready(self) -> bool:
        return True

    def reporting(self) -> bool:
        return True

    def holding(self) -> bool:
        return False

    def probe_jobs(self) -> Mapping[str, ProbeJob]:
        return self._jobs

    def verdicts_changed(self, verdicts: Mapping[VerdictKey, ProbeState]) -> None:
        return None

    def report_services(
        self, verdicts: Mapping[VerdictKey, ProbeState], keys: Collection[str] | None = None
    ) -> tuple[Service, ...]:
        specs = self.source.services
        if keys is not None:
            wanted = set(keys)
            specs = tuple(s for s in specs if f"{s.namespace}/{s.name}" in wanted)
        return tuple(
            Service(
                namespace=spec.namespace,
                name=spec.name,
                ports=spec.ports,
                ttl=spec.ttl,
                policy=spec.policy,
                endpoints=tuple(
                    Endpoint(
                        address=ep.address,
                        node=ep.node,
                        conditions=Conditions(ready=ep.ready, serving=ep.ready, terminating=False),
                        probe=verdicts.get((f"{spec.namespace}/{spec.name}", ep.address)),
                    )
                    for ep in spec.endpoints
                ),
            )
            for spec in specs
        )


def load(path: Path) -> StaticSource:
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the static source: {exc}") from exc
    try:
        return StaticSource.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe(exc)}") from exc
