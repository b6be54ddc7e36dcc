"""What the registry API shows: plain functions from a registry view to JSON-ready dicts."""

from __future__ import annotations

from typing import Any

from registry import health
from registry.model import ClusterState, RegistryView, Service
from registry.policies import effective_policy
from registry.topology import Topology


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
            1 for s in state.services for e in s.endpoints if health.verdict(e, problems).healthy
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


def services(view: RegistryView, *, lease_ttl_ms: int) -> dict[str, dict[str, Any]]:
    """Every service by ``namespace/name``, with every endpoint and its verdict."""
    out: dict[str, dict[str, Any]] = {}
    reported: dict[str, list[tuple[str, Service]]] = {}
    for cluster in view.clusters:
        problems = cluster_problems(cluster, now_ms=view.now_ms, lease_ttl_ms=lease_ttl_ms)
        for service in cluster.services:
            entry = out.setdefault(
                service.key,
                {
                    "namespace": service.namespace,
                    "name": service.name,
                    "clusters": [],
                    "endpoints": [],
                    "healthy": 0,
                },
            )
            entry["clusters"].append(cluster.name)
            reported.setdefault(service.key, []).append((cluster.name, service))
            for endpoint in service.endpoints:
                verdict = health.verdict(endpoint, problems)
                entry["healthy"] += verdict.healthy
                entry["endpoints"].append(
                    {
                        "cluster": cluster.name,
                        "region": cluster.region,
                        "address": endpoint.address,
                        "node": endpoint.node,
                        "ports": [p.model_dump() for p in service.ports],
                        "conditions": endpoint.conditions.model_dump(),
                        "probe": endpoint.probe.model_dump() if endpoint.probe else None,
                        "healthy": verdict.healthy,
                        "reasons": list(verdict.reasons),
                    }
                )
    for key, entry in out.items():
        policy, source = effective_policy(key, reported[key], view.policies)
        entry["policy"] = policy.model_dump()
        entry["policy_source"] = source
    return dict(sorted(out.items()))
