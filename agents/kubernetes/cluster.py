"""The cluster's report from what the watches hold: one pure function.

Inputs are the informers' caches (already translated), the parsed annotations, the node
Leases' verdicts and this pod's own probe verdicts; the output is the tuple of registry
records and the notes (what was skipped and why) for the caller to log. ``only`` builds
just the named Services (a watch event's delta), at a cost proportional to them, with
the same answer for each as the whole build gives. Which verdict an endpoint gets
depends on where it runs:

* on this pod's node, or on no node: this pod's own verdict;
* on a node whose agent's Lease expired: unhealthy, with the reason;
* on another node: that node's published verdict, if any.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from agents.kubernetes.annotations import Parsed
from agents.kubernetes.merge import Merged, MergedEndpoint, record
from agents.kubernetes.nodes import Peers
from agents.kubernetes.objects import Key, KubeService
from agents.source import VerdictKey
from registry.model import MAX_SERVICES_PER_CLUSTER, ProbeState, Service


@dataclass(frozen=True, slots=True)
class Built:
    services: tuple[Service, ...]
    notes: tuple[tuple[str, str], ...] = ()
    """``(<namespace>/<name>, why)`` for everything skipped or degraded."""


def build(
    services: Mapping[Key, KubeService],
    parsed: Mapping[Key, Parsed],
    merged: Mapping[Key, Merged],
    *,
    node: str,
    own: Mapping[VerdictKey, ProbeState],
    peers: Peers,
    only: Collection[Key] | None = None,
) -> Built:
    """The records of every exported Service, or with ``only`` of those of them that exist
    and are reported (an absent one is not: it was deleted, unexported, or is skipped)."""
    keys = sorted(services) if only is None else sorted(k for k in set(only) if k in services)
    notes: list[tuple[str, str]] = []
    kept: set[Key] | None = None
    # Only a cluster with more Services than the limit can exceed it: the count of the
    # reportable ones (and which of them are kept) is only worth computing then.
    if len(services) > MAX_SERVICES_PER_CLUSTER:
        reportable = [k for k in sorted(services) if services[k].type != "ExternalName"]
        if len(reportable) > MAX_SERVICES_PER_CLUSTER:
            notes.append(
                (
                    "*",
                    f"{len(reportable)} exported services; "
                    f"the registry keeps {MAX_SERVICES_PER_CLUSTER}",
                )
            )
            kept = set(reportable[:MAX_SERVICES_PER_CLUSTER])
    out: list[Service] = []
    for key in keys:
        if kept is not None and key not in kept:
            continue
        service, service_notes = _one(
            key, services[key], parsed[key], merged.get(key, Merged()), node, own, peers
        )
        notes.extend(service_notes)
        if service is not None:
            out.append(service)
    return Built(tuple(out), tuple(notes))


def _one(
    key: Key,
    service: KubeService,
    settings: Parsed,
    merged: Merged,
    node: str,
    own: Mapping[VerdictKey, ProbeState],
    peers: Peers,
) -> tuple[Service | None, list[tuple[str, str]]]:
    name = f"{key[0]}/{key[1]}"
    if service.type == "ExternalName":
        return None, [(name, "ExternalName Service: no endpoints to export; skipped")]
    notes = [(name, problem) for problem in settings.problems]

    def verdict(ep: MergedEndpoint) -> ProbeState | None:
        if ep.node is None or ep.node == node:
            return own.get((name, ep.address))
        if ep.node in peers.expired:
            return ProbeState(healthy=False, detail=peers.expired[ep.node])
        return peers.verdicts.get(ep.node, {}).get((name, ep.address))

    built = record(service, settings.settings, merged, verdict)
    notes.extend((name, note) for note in built.notes)
    return built.service, notes
