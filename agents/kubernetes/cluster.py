"""The whole cluster's report from what the watches hold: one pure function.

Inputs are the informers' caches (already translated), the parsed annotations, the node
Leases' verdicts and this pod's own probe verdicts; the output is the tuple of registry
records and the notes (what was skipped and why) for the caller to log. Which verdict an
endpoint gets depends on where it runs:

* on this pod's node, or on no node: this pod's own verdict;
* on a node whose agent's Lease expired: unhealthy, with the reason;
* on another node: that node's published verdict, if any.
"""

from __future__ import annotations

from collections.abc import Mapping
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
) -> Built:
    out: list[Service] = []
    notes: list[tuple[str, str]] = []
    for key in sorted(services):
        service = services[key]
        name = f"{key[0]}/{key[1]}"
        if service.type == "ExternalName":
            notes.append((name, "ExternalName Service: no endpoints to export; skipped"))
            continue
        settings = parsed[key]
        notes.extend((name, problem) for problem in settings.problems)

        def verdict(ep: MergedEndpoint, name: str = name) -> ProbeState | None:
            if ep.node is None or ep.node == node:
                return own.get((name, ep.address))
            if ep.node in peers.expired:
                return ProbeState(healthy=False, detail=peers.expired[ep.node])
            return peers.verdicts.get(ep.node, {}).get((name, ep.address))

        built = record(service, settings.settings, merged.get(key, Merged()), verdict)
        notes.extend((name, note) for note in built.notes)
        out.append(built.service)
    if len(out) > MAX_SERVICES_PER_CLUSTER:
        notes.append(
            ("*", f"{len(out)} exported services; the registry keeps {MAX_SERVICES_PER_CLUSTER}")
        )
        out = out[:MAX_SERVICES_PER_CLUSTER]
    return Built(tuple(out), tuple(notes))
