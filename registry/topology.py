"""The topology: regions with coordinates, clusters in regions, client networks.

Every process reads the same file (``deploy/examples/topology.yaml`` is the three-region
example): the registry learns which region a cluster is in (never from the agent), the
resolver learns where regions are and which client networks sit in which region, and dev
mode learns which clusters to simulate.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from registry import catalogue, grants
from registry.errors import ConfigError
from registry.model import Frozen, Label, Region


class ClusterSpec(Frozen):
    name: Label
    region: Label
    source: str | None = Field(
        default=None, description="static source file for this cluster's agent (dev mode)"
    )
    exports: tuple[str, ...] = Field(
        default=(),
        max_length=256,
        description="what this cluster may export: <namespace>, <namespace>/<name>, with * "
        "wildcards, or * for everything; nothing granted, nothing accepted (registry/grants.py)",
    )
    policy_annotations: bool = Field(
        default=False, description="whether this cluster's annotations may set a service's policy"
    )

    @field_validator("exports")
    @classmethod
    def _valid_exports(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(grants.check_pattern(p) for p in value)

    @property
    def grant(self) -> grants.Grant:
        return grants.Grant(self.exports, self.policy_annotations)


class Network(Frozen):
    cidr: str
    region: Label
    cluster: Label | None = Field(
        default=None, description="the cluster this network is (its nodes and pods), if any"
    )

    @field_validator("cidr")
    @classmethod
    def _valid_cidr(cls, value: str) -> str:
        try:
            return ipaddress.ip_network(value, strict=True).compressed
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a network in CIDR form: {exc}") from None


class Topology(Frozen):
    regions: tuple[Region, ...]
    clusters: tuple[ClusterSpec, ...] = ()
    networks: tuple[Network, ...] = ()
    default_region: Label | None = None
    latency: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="measured round trips in ms, latency[from][to]; overrides distance",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Topology:
        known = {region.name for region in self.regions}
        for cluster in self.clusters:
            if cluster.region not in known:
                raise ValueError(f"cluster {cluster.name}: unknown region {cluster.region!r}")
        for network in self.networks:
            if network.region not in known:
                raise ValueError(f"network {network.cidr}: unknown region {network.region!r}")
        if self.default_region is not None and self.default_region not in known:
            raise ValueError(f"default_region: unknown region {self.default_region!r}")
        for origin, row in self.latency.items():
            for region in (origin, *row):
                if region not in known:
                    raise ValueError(f"latency: unknown region {region!r}")
        return self

    def jurisdictions(self) -> dict[str, str | None]:
        return {region.name: region.jurisdiction for region in self.regions}

    def grants(self) -> grants.Grants:
        return grants.Grants({spec.name: spec.grant for spec in self.clusters})

    def region_of(self, cluster: str) -> str | None:
        for spec in self.clusters:
            if spec.name == cluster:
                return spec.region
        return None


def parse(document: dict[str, Any], *, origin: str = "topology") -> Topology:
    """Build a topology from the YAML shape (mappings keyed by name)."""
    try:
        regions = [_region(name, spec or {}) for name, spec in document.get("regions", {}).items()]
        clusters = [
            {"name": name, **(spec or {})}
            for name, spec in (document.get("clusters") or {}).items()
        ]
        cluster_regions = {
            name: (spec or {}).get("region")
            for name, spec in (document.get("clusters") or {}).items()
        }
        networks = [
            {"cidr": cidr, "region": cluster_regions[target], "cluster": target}
            if target in cluster_regions
            else {"cidr": cidr, "region": target}
            for cidr, target in (document.get("networks") or {}).items()
        ]
        unknown = set(document) - {"regions", "clusters", "networks", "default_region", "latency"}
        if unknown:
            raise ConfigError(f"{origin}: unknown keys {sorted(unknown)}")
        return Topology(
            regions=tuple(Region.model_validate(r) for r in regions),
            clusters=tuple(ClusterSpec.model_validate(c) for c in clusters),
            networks=tuple(Network.model_validate(n) for n in networks),
            default_region=document.get("default_region"),
            latency=document.get("latency") or {},
        )
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {describe(exc)}") from exc
    except (AttributeError, TypeError) as exc:
        raise ConfigError(f"{origin}: expected mappings keyed by name ({exc})") from exc


def _region(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A topology region, filled in from the built-in catalogue where it is silent."""
    base = catalogue.known(name)
    if base is None:
        return {"name": name, **spec}
    return {**base.model_dump(), **spec}


EXAMPLE = Path("deploy/examples/topology.yaml")
_CHECKOUT = Path(__file__).resolve().parent.parent


def default_path() -> Path:
    """The example topology: relative to the working directory when it is there (a
    checkout's root), else in the checkout this package runs from, so `globaldns dev`
    and the components find it from any directory. An installed image sets
    GLOBALDNS_TOPOLOGY instead."""
    if EXAMPLE.exists():
        return EXAMPLE
    beside = _CHECKOUT / EXAMPLE
    return beside if beside.exists() else EXAMPLE


def load(path: Path) -> Topology:
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"{path}: cannot read topology ({exc.__class__.__name__}: "
            f"{getattr(exc, 'strerror', None) or exc}); set GLOBALDNS_TOPOLOGY to the "
            "topology file"
        ) from exc
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: a topology is a mapping with 'regions' and 'clusters'")
    return parse(document, origin=str(path))


def describe(exc: ValidationError) -> str:
    """One line per problem, each naming the field path and why."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
