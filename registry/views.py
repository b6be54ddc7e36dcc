"""What the registry API shows: plain functions from a registry view to JSON-ready dicts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from registry import health
from registry.grants import Grants
from registry.model import ClusterState, Endpoint, Policy, RegistryView, Service
from registry.policies import effective_policy
from registry.records import compact
from registry.topology import Topology


@dataclass(frozen=True)
class Judged:
    """One service across clusters, judged by the same rules the resolver answers by."""

    key: str
    reported: list[tuple[ClusterState, Service]]
    endpoints: list[tuple[ClusterState, Service, Endpoint, health.Verdict]]
    policy: Policy
    policy_source: str
    policy_conflict: tuple[str, ...]
    spilled: frozenset[str]
    serving: set[str]
    """Clusters whose endpoints the answers can draw on now (see health.serving_clusters)."""


def judge(
    view: RegistryView, *, lease_ttl_ms: int, grants: Grants | None = None
) -> dict[str, Judged]:
    """Every service by ``namespace/name``, judged at the view's Redis time; with
    ``grants``, as the resolver answers: records a cluster may not export left out, and
    its annotations ignored where it may not set policy."""
    reported: dict[str, list[tuple[ClusterState, Service]]] = {}
    for cluster in view.clusters:
        for service in cluster.services:
            if grants is None or grants.exported(cluster.name, service.key):
                reported.setdefault(service.key, []).append((cluster, service))
    out: dict[str, Judged] = {}
    for key in sorted(reported):
        endpoints = []
        members = []
        for cluster, service in reported[key]:
            problems = cluster_problems(cluster, now_ms=view.now_ms, lease_ttl_ms=lease_ttl_ms)
            record = compact(service)
            for endpoint, slim in zip(service.endpoints, record.endpoints, strict=True):
                verdict = health.verdict(slim, problems)
                endpoints.append((cluster, service, endpoint, verdict))
                members.append((cluster.name, cluster.region, verdict))
        policy, source, conflict = effective_policy(
            key,
            [
                (c.name, s.policy if grants is None or grants.policy_annotations(c.name) else None)
                for c, s in reported[key]
            ],
            view.policies,
        )
        spilled, _since = health.spill(health.groups_of(members), policy, now_ms=view.now_ms)
        out[key] = Judged(
            key,
            reported[key],
            endpoints,
            policy,
            source,
            conflict,
            spilled,
            health.serving_clusters(members, spilled),
        )
    return out


def cluster_problems(cluster: ClusterState, *, now_ms: int, lease_ttl_ms: int) -> tuple[str, ...]:
    return health.cluster_reasons(
        last_seen_ms=cluster.last_seen_ms,
        now_ms=now_ms,
        lease_ttl_ms=lease_ttl_ms,
        drain=cluster.drain,
    )


def clusters(view: RegistryView, topology: Topology, *, lease_ttl_ms: int) -> list[dict[str, Any]]:
    known = {c.name: c for c in view.clusters}
    names = sorted(set(known) | {spec.name for spec in topology.clusters})
    out: list[dict[str, Any]] = []
    for name in names:
        state = known.get(name)
        if state is None:
            region = topology.region_of(name) or "unknown"
            out.append(
                {
                    "name": name,
                    "region": region,
                    "state": "never-reported",
                    "lease_age_s": None,
                    "lease_fresh": False,
                    "drain": None,
                    "services": 0,
                    "endpoints": {"total": 0, "healthy": 0},
                }
            )
            continue
        problems = cluster_problems(state, now_ms=view.now_ms, lease_ttl_ms=lease_ttl_ms)
        total = sum(len(s.endpoints) for s in state.services)
        healthy = sum(
            1
            for s in state.services
            for e in compact(s).endpoints
            if health.verdict(e, problems).healthy
        )
        out.append(
            {
                "name": name,
                "region": state.region,
                "state": "draining" if state.drain is not None else "active",
                "lease_age_s": round(
                    health.lease_age_ms(state.last_seen_ms, view.now_ms) / 1000, 3
                ),
                "lease_fresh": health.lease_fresh(state.last_seen_ms, view.now_ms, lease_ttl_ms),
                "drain": state.drain.model_dump() if state.drain else None,
                "services": len(state.services),
                "endpoints": {"total": total, "healthy": healthy},
            }
        )
    return out


def services(
    view: RegistryView, *, lease_ttl_ms: int, grants: Grants | None = None
) -> dict[str, dict[str, Any]]:
    """Every service by ``namespace/name``, with every endpoint and its verdict."""
    out: dict[str, dict[str, Any]] = {}
    for key, judged in judge(view, lease_ttl_ms=lease_ttl_ms, grants=grants).items():
        first = judged.reported[0][1]
        out[key] = {
            "namespace": first.namespace,
            "name": first.name,
            "clusters": [c.name for c, _s in judged.reported],
            "serving_clusters": sorted(judged.serving),
            "spilled": sorted(judged.spilled),
            "healthy": sum(v.healthy for *_x, v in judged.endpoints),
            "endpoints": [
                {
                    "cluster": cluster.name,
                    "region": cluster.region,
                    "address": endpoint.address,
                    "node": endpoint.node,
                    "ports": [p.model_dump() for p in service.ports],
                    "conditions": endpoint.conditions.model_dump(),
                    "probe": endpoint.probe.model_dump() if endpoint.probe else None,
                    "healthy": verdict.healthy,
                    "standby": verdict.standby,
                    "reasons": list(verdict.reasons),
                }
                for cluster, service, endpoint, verdict in judged.endpoints
            ],
            "policy": judged.policy.model_dump(),
            "policy_source": judged.policy_source,
            "policy_conflict": list(judged.policy_conflict),
        }
    return out
