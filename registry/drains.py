"""What draining clusters would do to each service: pure, so a dry run is the same code.

A drain is refused when it would leave some service with no healthy cluster at all —
the one mistake a drain must not make silently (AWS ARC calls these safety rules). The
operator can still force it, knowing what will happen, since the impact lists every
service that loses a cluster and where its clients go.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from registry import views
from registry.geography import region_order
from registry.model import RegistryView
from registry.topology import Topology


@dataclass(frozen=True)
class Impact:
    service: str
    loses: tuple[str, ...]
    """Drained clusters that now serve it with healthy endpoints."""
    remaining: tuple[str, ...]
    """Clusters that will still serve it."""
    clients_go_to: dict[str, str | None] = field(default_factory=dict)
    """For each drained cluster's region: the nearest region that still serves it."""

    @property
    def stranded(self) -> bool:
        return bool(self.loses) and not self.remaining

    def as_dict(self) -> dict[str, object]:
        return {
            "service": self.service,
            "loses": list(self.loses),
            "remaining": list(self.remaining),
            "clients_go_to": self.clients_go_to,
            "stranded": self.stranded,
        }


def healthy_clusters(
    view: RegistryView, topology: Topology, *, lease_ttl_ms: int
) -> dict[str, set[str]]:
    """Per service, the clusters its answers can draw on now (the resolver's own rules:
    health, spillover, and the serving-terminating fallback)."""
    return {
        key: judged.serving
        for key, judged in views.judge(
            view, lease_ttl_ms=lease_ttl_ms, grants=topology.grants()
        ).items()
    }


def impact(
    view: RegistryView, topology: Topology, draining: Iterable[str], *, lease_ttl_ms: int
) -> list[Impact]:
    drained = set(draining)
    region_of = {c.name: c.region for c in view.clusters}
    out = []
    serving_now = healthy_clusters(view, topology, lease_ttl_ms=lease_ttl_ms)
    for service, serving in sorted(serving_now.items()):
        loses = tuple(sorted(serving & drained))
        if not loses:
            continue
        remaining = tuple(sorted(serving - drained))
        remaining_regions = {region_of[c] for c in remaining}
        go_to: dict[str, str | None] = {}
        for cluster in loses:
            origin = region_of[cluster]
            order = region_order(origin, topology.regions, topology.latency)
            go_to[origin] = next((r for r in order if r in remaining_regions), None)
        out.append(Impact(service, loses, remaining, go_to))
    return out
