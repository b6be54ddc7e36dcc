"""Which endpoints this agent pod probes: a pure function of the picture and its node.

Each DaemonSet pod probes only the endpoints whose ``nodeName`` is its own node
(``NODE_NAME`` from the downward API): the work splits across the DaemonSet with no
coordination, and every probe stays on its node (no cross-zone traffic). Endpoints with
no node (hand-made or mirrored slices) are probed by the cluster's leader alone.
Load-balancer-mode Services are not probed per pod: their health is the count of ready
endpoints behind the load balancer.

The probe port is a number, a port *name* resolved against the endpoint's own slice
(named target ports may differ between slices), or unset: the slice's first port.
"""

from __future__ import annotations

from collections.abc import Mapping

from agents.kubernetes.annotations import ProbeSettings, ServiceSettings
from agents.kubernetes.merge import Merged, address_mode
from agents.kubernetes.objects import Key, KubeService, SlicePort
from agents.source import Check, ProbeJob, Target


def resolve_port(wanted: int | str | None, ports: tuple[SlicePort, ...]) -> int | None:
    if isinstance(wanted, int):
        return wanted
    if wanted is None:
        return ports[0].port if ports else None
    for port in ports:
        if port.name == wanted:
            return port.port
    return None


def check(probe: ProbeSettings) -> Check:
    return Check(
        kind=probe.kind,
        path=probe.path,
        interval_s=probe.interval_s,
        timeout_s=probe.timeout_s,
        rise=probe.rise,
        fall=probe.fall,
    )


def probe_jobs(
    services: Mapping[Key, KubeService],
    settings: Mapping[Key, ServiceSettings],
    merged: Mapping[Key, Merged],
    *,
    node: str,
    leading: bool,
) -> dict[str, ProbeJob]:
    jobs: dict[str, ProbeJob] = {}
    for key, service in services.items():
        chosen = settings.get(key)
        if chosen is None or chosen.probe is None:
            continue
        if address_mode(service, chosen) != "pods":
            continue
        targets = []
        for ep in merged.get(key, Merged()).endpoints:
            if not (ep.node == node or (ep.node is None and leading)):
                continue
            port = resolve_port(chosen.probe.port, ep.ports)
            if port is not None:
                targets.append(Target(ep.address, port))
        if targets:
            jobs[f"{key[0]}/{key[1]}"] = ProbeJob(check(chosen.probe), tuple(targets))
    return jobs
