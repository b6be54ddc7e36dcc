"""Kubernetes objects built the way their controllers build them, and running agents.

:func:`slices_for` follows the EndpointSlice controller (``pkg/controller/endpointslice``):
one slice per IP family and per set of resolved target ports, at most
``max_per_slice`` endpoints each, ``generateName: <service>-``, the Service's labels
copied plus ``kubernetes.io/service-name`` and the managed-by label, an owner reference,
and conditions computed as the controller does::

    serving = pod is Ready;  terminating = pod has a deletionTimestamp
    ready = publishNotReadyAddresses or (serving and not terminating)

A Service with no pods gets the placeholder slice (``endpoints: null, ports: null``).
:func:`apply` reconciles like the controller: writes the slices a Service should have and
deletes the ones it should not.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agents.agent import Agent
from agents.kubernetes.main import serve
from agents.kubernetes.settings import KubernetesAgentSettings
from agents.kubernetes.source import KubernetesSource
from tests.agents.apiserver import Obj, Store, TestApiserver, make_tls, running
from tests.agents.recording import RecordingClient
from tests.helpers import TOKENS

EXPORT = {"globaldns.io/export": "true"}
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
CONTROLLER = "endpointslice-controller.k8s.io"
SERVICE_NAME = "kubernetes.io/service-name"


def service(
    name: str,
    namespace: str = "production",
    *,
    ports: Iterable[tuple[str, int, int | str]] = (("http", 80, "http"),),
    protocol: str = "TCP",
    type: str = "ClusterIP",
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    export: bool = True,
    publish_not_ready: bool = False,
    ingress: Iterable[str] = (),
    families: tuple[str, ...] = ("IPv4",),
) -> Obj:
    """A Service; ``ports`` are ``(name, port, targetPort)``."""
    all_labels = {"app": name, **(labels or {}), **(EXPORT if export else {})}
    spec: dict[str, Any] = {
        "type": type,
        "selector": {"app": name},
        "ports": [
            {"name": n, "port": p, "targetPort": t, "protocol": protocol} for n, p, t in ports
        ],
        "ipFamilies": list(families),
        "ipFamilyPolicy": "RequireDualStack" if len(families) > 1 else "SingleStack",
    }
    if publish_not_ready:
        spec["publishNotReadyAddresses"] = True
    status: dict[str, Any] = {"loadBalancer": {}}
    if ingress:
        status["loadBalancer"]["ingress"] = [{"ip": ip} for ip in ingress]
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": all_labels}
    if annotations:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "spec": spec, "status": status}


@dataclass
class Pod:
    name: str
    ip: str
    ip6: str | None = None
    node: str | None = "node-a"
    zone: str | None = "zone-1"
    ready: bool = True
    deleting: bool = False
    ports: dict[str, int] = field(default_factory=lambda: {"http": 8080})

    @property
    def uid(self) -> str:
        return "uid-" + hashlib.sha1(self.name.encode()).hexdigest()[:12]


def conditions(pod: Pod, svc: Obj) -> dict[str, bool]:
    serving = pod.ready
    terminating = pod.deleting
    ready = bool(svc["spec"].get("publishNotReadyAddresses")) or (serving and not terminating)
    return {"ready": ready, "serving": serving, "terminating": terminating}


def endpoint(pod: Pod, svc: Obj, family: str = "IPv4") -> Obj:
    address = pod.ip if family == "IPv4" else pod.ip6
    ep: Obj = {
        "addresses": [address],
        "conditions": conditions(pod, svc),
        "targetRef": {
            "kind": "Pod",
            "namespace": svc["metadata"]["namespace"],
            "name": pod.name,
            "uid": pod.uid,
        },
    }
    if pod.node is not None:
        ep["nodeName"] = pod.node
    if pod.zone is not None:
        ep["zone"] = pod.zone
    return ep


def slice_labels(svc: Obj) -> dict[str, str]:
    reserved = {SERVICE_NAME, MANAGED_BY}
    labels = {k: v for k, v in svc["metadata"]["labels"].items() if k not in reserved}
    labels[SERVICE_NAME] = svc["metadata"]["name"]
    labels[MANAGED_BY] = CONTROLLER
    if svc["spec"].get("clusterIP") == "None":
        labels["service.kubernetes.io/headless"] = ""
    return labels


def endpoint_slice(
    svc: Obj,
    name: str,
    *,
    family: str = "IPv4",
    endpoints: list[Obj] | None,
    ports: list[Obj] | None,
) -> Obj:
    """A slice as raw as it comes, for the awkward cases."""
    meta = svc["metadata"]
    return {
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "generateName": meta["name"] + "-",
            "labels": slice_labels(svc),
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "name": meta["name"],
                    "uid": meta.get("uid", "uid-" + meta["name"]),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "addressType": family,
        "endpoints": endpoints,
        "ports": ports,
    }


MIRRORING = "endpointslicemirroring-controller.k8s.io"


def selectorless(svc: Obj) -> Obj:
    """The Service without a selector: its endpoints come from a hand-written Endpoints
    object (or hand-written slices), not from pods."""
    spec = {k: v for k, v in svc["spec"].items() if k != "selector"}
    return {**svc, "spec": spec}


def mirrored_slice(svc: Obj, pods: Iterable[Pod], endpoints_labels: dict[str, str]) -> Obj:
    """What the EndpointSlice mirroring controller writes for a selector-less Service's
    Endpoints: the *Endpoints object's* labels (not the Service's), plus the service-name
    and its own managed-by label; the owner is the Endpoints object."""
    meta = svc["metadata"]
    labels = {**endpoints_labels, SERVICE_NAME: meta["name"], MANAGED_BY: MIRRORING}
    ports = [{"name": n, "port": t, "protocol": "TCP"} for n, _p, t in _spec_ports(svc)]
    return {
        "metadata": {
            "name": f"{meta['name']}-mirrored",
            "namespace": meta["namespace"],
            "generateName": meta["name"] + "-",
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Endpoints",
                    "name": meta["name"],
                    "uid": "uid-endpoints-" + meta["name"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "addressType": "IPv4",
        "endpoints": [endpoint(p, svc) for p in pods],
        "ports": ports,
    }


def _spec_ports(svc: Obj) -> list[tuple[str, int, int]]:
    return [
        (p["name"], p["port"], p["targetPort"] if isinstance(p["targetPort"], int) else p["port"])
        for p in svc["spec"]["ports"]
    ]


def resolved_ports(svc: Obj, pod: Pod) -> tuple[tuple[str, int, str], ...]:
    out = []
    for port in svc["spec"]["ports"]:
        target = port["targetPort"]
        number = target if isinstance(target, int) else pod.ports.get(target)
        if number is not None:
            out.append((port["name"], number, port.get("protocol", "TCP")))
    return tuple(out)


def slices_for(svc: Obj, pods: Iterable[Pod], *, max_per_slice: int = 100) -> list[Obj]:
    name = svc["metadata"]["name"]
    families = svc["spec"].get("ipFamilies") or ["IPv4"]
    groups: dict[tuple[str, tuple[tuple[str, int, str], ...]], list[Pod]] = {}
    for pod in pods:
        for family in families:
            if family == "IPv6" and pod.ip6 is None:
                continue
            groups.setdefault((family, resolved_ports(svc, pod)), []).append(pod)
    out = []
    for (family, ports), members in sorted(groups.items()):
        for index in range(0, len(members), max_per_slice):
            chunk = members[index : index + max_per_slice]
            suffix = hashlib.sha1(f"{family}|{ports}|{index}".encode()).hexdigest()[:5]
            out.append(
                endpoint_slice(
                    svc,
                    f"{name}-{suffix}",
                    family=family,
                    endpoints=[endpoint(p, svc, family) for p in chunk],
                    ports=[{"name": n, "port": p, "protocol": proto} for n, p, proto in ports],
                )
            )
    if not out:
        out.append(
            endpoint_slice(svc, f"{name}-empty", family=families[0], endpoints=None, ports=None)
        )
    return out


def apply(store: Store, svc: Obj, pods: Iterable[Pod], *, max_per_slice: int = 100) -> list[Obj]:
    """Write the Service and reconcile its slices, as the controller would."""
    store.put("services", svc)
    wanted = slices_for(svc, list(pods), max_per_slice=max_per_slice)
    names = {s["metadata"]["name"] for s in wanted}
    namespace, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
    for (ns, slice_name), obj in list(store.objects["endpointslices"].items()):
        owner = (obj["metadata"].get("labels") or {}).get(SERVICE_NAME)
        if ns == namespace and owner == name and slice_name not in names:
            store.delete("endpointslices", ns, slice_name)
    current = store.objects["endpointslices"]
    for s in wanted:
        old = current.get((namespace, s["metadata"]["name"]))
        if old is None or _content(old) != _content(s):
            store.put("endpointslices", s)
    return wanted


def _content(obj: Obj) -> Any:
    return (obj.get("endpoints"), obj.get("ports"), obj["metadata"].get("labels"))


# -- running ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def apiserver(
    directory: Path, token: str = "k8s-token-0123456789", **kw: Any
) -> AsyncIterator[TestApiserver]:
    """A test apiserver; it accepts ``token`` and any token added to ``server.tokens``."""
    tls = make_tls(directory / "pki")
    server = TestApiserver(tokens={token}, **kw)
    server.token = token  # type: ignore[attr-defined]
    server.tls = tls  # type: ignore[attr-defined]
    async with running(server, tls):
        yield server


def kubeconfig(directory: Path, server: TestApiserver, token: str | None = None) -> Path:
    path = directory / "kubeconfig"
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "test",
                        "cluster": {
                            "server": server.url,
                            "certificate-authority": str(server.tls.ca),  # type: ignore[attr-defined]
                        },
                    }
                ],
                "users": [{"name": "agent", "user": {"token": token or server.token}}],  # type: ignore[attr-defined]
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "agent"}}],
                "current-context": "test",
            }
        )
    )
    return path


FAST = {
    "leader_lease_s": 2,
    "leader_renew_s": 0.3,
    "node_lease_s": 3,
    "heartbeat_interval_s": 0.5,
    "watch_timeout_s": 30,
    "read_timeout_s": 10,
}


@dataclass
class Running:
    agent: Agent
    stop: asyncio.Event
    task: asyncio.Task[None]

    @property
    def client(self) -> RecordingClient:
        """What this pod sent to the registry, and the answers."""
        assert isinstance(self.agent.client, RecordingClient)
        return self.agent.client

    @property
    def source(self) -> KubernetesSource:
        assert isinstance(self.agent.source, KubernetesSource)
        return self.agent.source


@contextlib.asynccontextmanager
async def k8s_agent(
    server: TestApiserver,
    directory: Path,
    registry_url: str,
    *,
    cluster: str = "us-east-prod",
    node: str = "node-a",
    pod: str | None = None,
    token: str | None = None,
    **overrides: Any,
) -> AsyncIterator[Running]:
    """A Kubernetes agent pod, as the DaemonSet runs it, against ``server``.

    ``token`` gives the pod its own apiserver credential (added to the server's), so a
    test can cut this pod off by revoking it.
    """
    if token is not None:
        server.tokens.add(token)
    pod = pod or f"agent-{node}"
    settings = KubernetesAgentSettings(
        cluster=cluster,
        registry_url=registry_url,
        token=TOKENS[cluster],
        node_name=node,
        pod_name=pod,
        namespace="globaldns",
        kubeconfig=kubeconfig(directory / f"kube-{cluster}-{pod}", server, token),
        http_host="127.0.0.1",
        http_port=0,
        log_json=False,
        **{**FAST, **overrides},
    )
    stop = asyncio.Event()
    started: asyncio.Future[Agent] = asyncio.get_running_loop().create_future()

    def record(agent: Agent) -> None:
        # Before the agent's tasks first run: every call it makes is recorded.
        agent.client = RecordingClient(agent.client)
        started.set_result(agent)

    task = asyncio.create_task(serve(settings, stop=stop, started=record))
    done, _ = await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    running = Running(started.result(), stop, task)
    try:
        yield running
    finally:
        stop.set()
        await task
