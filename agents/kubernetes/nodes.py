"""Node Leases: how a DaemonSet pod tells the leader "my node is alive, and here is what
my probes see". Pure naming, encoding and judging.

Each agent pod renews ``globaldns-node-<node>`` (a coordination.k8s.io Lease in the
agent's namespace, the pattern of the kubelet's own ``kube-node-lease``) with its probe
verdicts in an annotation. The leader reads every node Lease through its Lease watch:

* a fresh Lease's verdicts narrow the Kubernetes conditions of that node's endpoints;
* an expired Lease (the pod or its node is dead) marks that node's endpoints unhealthy,
  so they leave the answers;
* a node that never had a Lease (no agent scheduled there) is judged on its Kubernetes
  conditions alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agents.kubernetes.election import Seen, expired
from agents.kubernetes.objects import Key, Lease
from agents.source import VerdictKey
from registry.model import ProbeState

LEASE_LABEL = "globaldns.io/lease"
"""``node`` or ``leader``: the Lease watch selects on this label."""
NODE_ANNOTATION = "globaldns.io/node"
VERDICTS_ANNOTATION = "globaldns.io/verdicts"
LEADER_LEASE = "globaldns-leader"
_PREFIX = "globaldns-node-"


def lease_name(node: str) -> str:
    name = _PREFIX + node.lower()
    if len(name) <= 253:
        return name
    return _PREFIX + hashlib.sha256(node.encode()).hexdigest()[:32]


def encode(verdicts: Mapping[VerdictKey, ProbeState]) -> str:
    nested: dict[str, dict[str, list[object]]] = {}
    for (service, address), state in sorted(verdicts.items()):
        nested.setdefault(service, {})[address] = [state.healthy, state.detail]
    return json.dumps(nested, separators=(",", ":"), sort_keys=True)


def decode(text: str | None) -> dict[VerdictKey, ProbeState]:
    if not text:
        return {}
    try:
        nested = json.loads(text)
        return {
            (service, address): ProbeState(healthy=bool(pair[0]), detail=str(pair[1])[:200])
            for service, addresses in nested.items()
            for address, pair in addresses.items()
        }
    except (ValueError, TypeError, AttributeError, IndexError, KeyError):
        return {}


@dataclass(frozen=True, slots=True)
class Peers:
    verdicts: dict[str, dict[VerdictKey, ProbeState]] = field(default_factory=dict)
    """By node: the verdicts its agent published, from fresh Leases only."""
    expired: dict[str, str] = field(default_factory=dict)
    """By node: why its endpoints are out (its agent's Lease expired)."""


def peers(leases: Iterable[Lease], seen: Mapping[Key, Seen], *, now: float) -> Peers:
    out = Peers()
    for lease in leases:
        if lease.labels.get(LEASE_LABEL) != "node":
            continue
        node = lease.annotations.get(NODE_ANNOTATION)
        observed = seen.get(lease.key)
        if not node or observed is None:
            continue
        if expired(observed, now):
            out.expired[node] = (
                f"node {node}: its agent's lease expired (not renewed for {observed.duration_s}s)"
            )
        else:
            out.verdicts[node] = decode(lease.annotations.get(VERDICTS_ANNOTATION))
    return out


def changes(old: Peers, new: Peers) -> tuple[frozenset[str], frozenset[str]]:
    """What differs between two readings of the node Leases: the services
    (``<namespace>/<name>``) whose published verdicts differ, and the nodes whose Lease
    expired or came back (every endpoint on them changes)."""
    services: set[str] = set()
    for node in old.verdicts.keys() | new.verdicts.keys():
        before, after = old.verdicts.get(node, {}), new.verdicts.get(node, {})
        if before != after:
            services.update(
                k[0] for k in before.keys() | after.keys() if before.get(k) != after.get(k)
            )
    nodes = {
        node
        for node in old.expired.keys() | new.expired.keys()
        if old.expired.get(node) != new.expired.get(node)
    }
    return frozenset(services), frozenset(nodes)
