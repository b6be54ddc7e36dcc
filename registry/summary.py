"""What the status page shows: plain functions from a registry view to one JSON document.

The page (``registry/static/status.html``) draws it: clusters on a world map coloured by
:func:`cluster_state`, a service-by-cluster matrix of healthy/total endpoints coloured by
:func:`cell_state`, the drains with who and why, and the latest entries of the change
stream. Health is judged by :func:`registry.views.judge` and :func:`registry.views.clusters`,
the same rules the resolver answers by; nothing here judges an endpoint itself.

Building a summary reads every record, so the status page's stream builds one only when
what it shows may have changed — the generation moved (every record, drain and policy
write bumps it) or a lease turned fresh or stale (:func:`fingerprint`) — and no more
often than :func:`next_build_at` allows. Between builds it sends a :func:`pulse`: the
Redis time and each cluster's last heartbeat, so the page can show lease ages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from registry import health, views
from registry.grants import Grants
from registry.model import RegistryView
from registry.topology import Topology

MAX_SERVICES = 200
"""Rows of the matrix at most: past this the services with a problem come first, and the
page says how many are left out (a browser cannot use a matrix of 10,000 rows anyway)."""
MAX_KEYS_PER_CHANGE = 8
"""Services named per change shown; the rest are counted."""

Fingerprint = tuple[int, frozenset[str]]
"""(generation, clusters with a fresh lease): a summary is current while this holds."""


class ChangeEntry(Protocol):
    """A change-stream entry as :class:`registry.store.Change` holds it."""

    @property
    def id(self) -> str: ...
    @property
    def cluster(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def keys(self) -> tuple[str, ...]: ...


def cluster_state(
    *, reported: bool, lease_fresh: bool, drained: bool, healthy: int, total: int
) -> str:
    """One word for a cluster's colour, the first that applies: ``unknown`` (never
    reported), ``stale`` (no heartbeat within the lease), ``drained``, ``empty`` (no
    endpoints), ``ok`` (all healthy), ``down`` (none healthy), ``degraded``."""
    if not reported:
        return "unknown"
    if not lease_fresh:
        return "stale"
    if drained:
        return "drained"
    if total == 0:
        return "empty"
    if healthy == total:
        return "ok"
    return "down" if healthy == 0 else "degraded"


def cell_state(healthy: int, total: int, *, cluster: str) -> str:
    """One word for a matrix cell: the cluster's own trouble (``stale``, ``drained``) first,
    since it explains the count; else ``ok``, ``partial`` or ``down``."""
    if cluster in ("stale", "drained", "unknown"):
        return cluster
    if total and healthy == total:
        return "ok"
    return "partial" if healthy else "down"


def fingerprint(
    generation: int, last_seen_ms: Mapping[str, int], *, now_ms: int, lease_ttl_ms: int
) -> Fingerprint:
    fresh = frozenset(
        name
        for name, seen in last_seen_ms.items()
        if health.lease_fresh(seen, now_ms, lease_ttl_ms)
    )
    return generation, fresh


def fingerprint_of(content: Mapping[str, Any]) -> Fingerprint:
    """The fingerprint a summary was built at (its lease flags judged as :func:`fingerprint`
    judges them, by :func:`registry.health.lease_fresh`)."""
    fresh = frozenset(c["name"] for c in content["clusters"] if c["lease_fresh"])
    return content["generation"], fresh


def next_build_at(finished_s: float, cost_s: float, *, tick_s: float, max_share: float) -> float:
    """When the next build may start: at least a tick after the last one finished, and
    late enough that building takes at most ``max_share`` of the time (a registry of
    300,000 endpoints changing every second is shown a little behind, not rebuilt flat
    out)."""
    return finished_s + max(tick_s, cost_s * (1 - max_share) / max_share)


def pulse(now_ms: int, last_seen_ms: Mapping[str, int]) -> dict[str, Any]:
    """What is sent between builds: the Redis time and every cluster's last heartbeat."""
    return {"now_ms": now_ms, "last_seen_ms": dict(sorted(last_seen_ms.items()))}


def change_time_ms(entry_id: str) -> int:
    """A stream entry's time: its ID is ``<Redis ms>-<sequence>``."""
    head = entry_id.partition("-")[0]
    return int(head) if head.isdigit() else 0


def summarize(
    view: RegistryView,
    topology: Topology,
    *,
    lease_ttl_ms: int,
    grants: Grants | None = None,
    changes: Iterable[ChangeEntry] = (),
    max_services: int = MAX_SERVICES,
) -> dict[str, Any]:
    """The whole page as JSON (``registry/static/status.html`` reads these fields)."""
    counts = _counts(view, lease_ttl_ms, grants)
    per_cluster: dict[str, tuple[int, int]] = {}
    for cells in counts.values():
        for name, (healthy, total) in cells.items():
            sum_healthy, sum_total = per_cluster.get(name, (0, 0))
            per_cluster[name] = (sum_healthy + healthy, sum_total + total)
    seen = {c.name: c.last_seen_ms for c in view.clusters}
    states: dict[str, str] = {}
    clusters = []
    for row in views.clusters(view, topology, lease_ttl_ms=lease_ttl_ms):
        name = row["name"]
        healthy, total = per_cluster.get(name, (0, 0))
        states[name] = cluster_state(
            reported=row["state"] != "never-reported",
            lease_fresh=row["lease_fresh"],
            drained=row["drain"] is not None,
            healthy=healthy,
            total=total,
        )
        clusters.append(
            {
                "name": name,
                "region": row["region"],
                "state": states[name],
                "lease_fresh": row["lease_fresh"],
                "last_seen_ms": seen.get(name, 0),
                "drain": row["drain"],
                "services": row["services"],
                "endpoints": {"healthy": healthy, "total": total},
            }
        )
    rows: list[dict[str, Any]] = [
        {
            "service": key,
            "cells": {
                name: {
                    "healthy": healthy,
                    "total": total,
                    "state": cell_state(healthy, total, cluster=states.get(name, "unknown")),
                }
                for name, (healthy, total) in sorted(cells.items())
            },
        }
        for key, cells in counts.items()
    ]
    if len(rows) > max_services:
        rows.sort(
            key=lambda r: (all(c["state"] == "ok" for c in r["cells"].values()), r["service"])
        )
    return {
        "generation": view.generation,
        "now_ms": view.now_ms,
        "lease_ttl_s": lease_ttl_ms / 1000,
        "regions": [
            {"name": r.name, "latitude": r.latitude, "longitude": r.longitude}
            for r in sorted(topology.regions, key=lambda r: r.name)
        ],
        "clusters": clusters,
        "services": rows[:max_services],
        "services_total": len(rows),
        "drains": [
            {"cluster": c["name"], **c["drain"]} for c in clusters if c["drain"] is not None
        ],
        "changes": [_change(entry) for entry in changes],
    }


def _counts(
    view: RegistryView, lease_ttl_ms: int, grants: Grants | None
) -> dict[str, dict[str, tuple[int, int]]]:
    """Service → cluster → (healthy, total) endpoints, as the resolver's records hold them
    (grants applied). Healthy counts what the endpoint itself says — ready, probe passing —
    so that a drained or stale cluster still shows whether its endpoints are fine; the
    cluster's own trouble is its state, and the resolver gives out none of them."""
    problems = {
        c.name: views.cluster_problems(c, now_ms=view.now_ms, lease_ttl_ms=lease_ttl_ms)
        for c in view.clusters
    }
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for key, judged in views.judge(view, lease_ttl_ms=lease_ttl_ms, grants=grants).items():
        cells = out.setdefault(key, {})
        for cluster, _service in judged.reported:  # a service with no endpoints there: 0/0
            cells.setdefault(cluster.name, (0, 0))
        for cluster, _service, _endpoint, verdict in judged.endpoints:
            # health.verdict gives the cluster's problems, then the endpoint's own reasons:
            # nothing past the cluster's means the endpoint itself is fine.
            fine = verdict.healthy or len(verdict.reasons) == len(problems[cluster.name])
            healthy, total = cells[cluster.name]
            cells[cluster.name] = (healthy + fine, total + 1)
    return out


def _change(entry: ChangeEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at_ms": change_time_ms(entry.id),
        "cluster": entry.cluster,
        "kind": entry.kind,
        "keys": list(entry.keys[:MAX_KEYS_PER_CHANGE]),
        "more_keys": max(0, len(entry.keys) - MAX_KEYS_PER_CHANGE),
    }
