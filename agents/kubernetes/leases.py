"""Writing Leases: the leader election and this pod's node Lease (the I/O around
:mod:`.election` and :mod:`.nodes`).

Writes use optimistic concurrency: a replace carries the resourceVersion we last read or
wrote, and a 409 means someone else wrote since, so we read again and decide again.

The leader trusts only its own writes (a renewal that succeeds proves it still holds the
Lease); the watch on Leases serves the standbys, which judge the holder's record by
observation and take over when it expires, or at once when the leader releases it on a
clean shutdown (a rolling update of the DaemonSet moves leadership in milliseconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import structlog
from kubernetes_asyncio.client import ApiClient, CoordinationV1Api

from agents.kubernetes import election, nodes
from agents.kubernetes.objects import Lease, Rejected, format_time, parse_lease
from agents.source import VerdictKey
from registry.aio import sleep_or_stop
from registry.model import ProbeState

log = structlog.get_logger("agents.kubernetes")

Monotonic = Callable[[], float]
WallMs = Callable[[], int]


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class LeaseError(Exception):
    """A Lease call failed::

    LeaseError
    ├── Conflict     409: someone else wrote the Lease since we read it (or it exists)
    ├── Unanswered   no answer about the Lease: connection errors, timeouts, 5xx, 429
    │                (the apiserver, or etcd behind it, is out: see :mod:`.outage`)
    └── Refused      any other answer: 401/403 (credentials, RBAC), 4xx, an
                     unreadable body
    """


class Conflict(LeaseError):
    """409: the Lease was written by someone else since we read it (or exists)."""


class Unanswered(LeaseError):
    """The apiserver gave no answer about the Lease."""


class Refused(LeaseError):
    """The apiserver answered, and not with the Lease."""


class LeaseApi:
    """get / create / replace one namespace's Leases as raw JSON."""

    def __init__(self, client: ApiClient, namespace: str, *, timeout_s: float = 5.0) -> None:
        self.api: Any = CoordinationV1Api(client)
        self.namespace = namespace
        self.timeout_s = timeout_s

    async def _call(self, method: str, *args: Any) -> Lease | None:
        try:
            response = await getattr(self.api, method)(
                *args, _preload_content=False, _request_timeout=self.timeout_s
            )
            try:
                status, body = response.status, await response.read()
            finally:
                response.release()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Unanswered(f"{method}: {exc.__class__.__name__}: {exc}") from exc
        if status == 404:
            return None
        if status == 409:
            raise Conflict(f"{method}: conflict")
        if status >= 500 or status == 429:
            raise Unanswered(f"{method}: HTTP {status}: {body[:300]!r}")
        if status >= 300:
            raise Refused(f"{method}: HTTP {status}: {body[:300]!r}")
        try:
            parsed = parse_lease(json.loads(body))
        except ValueError as exc:
            raise Refused(f"{method}: unreadable answer") from exc
        if isinstance(parsed, Rejected):
            raise Refused(f"{method}: {parsed.reason}")
        return parsed

    async def get(self, name: str) -> Lease | None:
        return await self._call("read_namespaced_lease", name, self.namespace)

    async def create(self, body: dict[str, Any]) -> Lease:
        lease = await self._call("create_namespaced_lease", self.namespace, body)
        if lease is None:
            raise LeaseError("create: namespace not found")
        return lease

    async def replace(self, name: str, body: dict[str, Any]) -> Lease | None:
        return await self._call("replace_namespaced_lease", name, self.namespace, body)


def lease_body(
    name: str,
    namespace: str,
    *,
    holder: str | None,
    duration_s: int,
    renew_ms: int,
    acquire_ms: int | None,
    transitions: int,
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
    resource_version: str | None = None,
    owner: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if annotations:
        metadata["annotations"] = dict(annotations)
    if owner:
        metadata["ownerReferences"] = [dict(owner)]
    if resource_version:
        metadata["resourceVersion"] = resource_version
    spec: dict[str, Any] = {
        "leaseDurationSeconds": duration_s,
        "renewTime": format_time(renew_ms),
        "leaseTransitions": transitions,
    }
    if holder is not None:
        spec["holderIdentity"] = holder
    if acquire_ms is not None:
        spec["acquireTime"] = format_time(acquire_ms)
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": spec,
    }


class Elector:
    """Campaign for the cluster's leader Lease; :meth:`leading` says whether we hold it."""

    def __init__(
        self,
        api: LeaseApi,
        *,
        identity: str,
        observed: Callable[[], Lease | None],
        lease_s: int = 4,
        renew_s: float = 1.0,
        deadline_s: float = 3.0,
        on_change: Callable[[], None] = lambda: None,
        on_step: Callable[[], None] = lambda: None,
        clock: Monotonic = time.monotonic,
        wall_ms: WallMs = _wall_ms,
    ) -> None:
        if not renew_s < deadline_s < lease_s:
            raise ValueError("leader lease timings need renew < deadline < lease duration")
        self.api = api
        self.identity = identity
        self.observed = observed
        self.lease_s = lease_s
        self.renew_s = renew_s
        self.deadline_s = deadline_s
        self.on_change = on_change
        self.on_step = on_step
        """Called after every attempt: :meth:`holder`, :attr:`refused` or
        :attr:`unanswered_since` may differ."""
        self.clock = clock
        self.wall_ms = wall_ms
        self.name = nodes.LEADER_LEASE
        self.seen: election.Seen | None = None
        self.current: Lease | None = None
        self.renewed_at: float | None = None
        self.unanswered_since: float | None = None
        """When the first Lease call since the last answered one was sent."""
        self.refused = False
        """The apiserver refused a Lease call since our last successful write."""
        self.transitions = 0
        self.wake = asyncio.Event()
        self._was_leading = False
        self.log = log.bind(identity=identity)

    def leading(self) -> bool:
        return election.leading(
            self.seen,
            me=self.identity,
            renewed_at=self.renewed_at,
            now=self.clock(),
            deadline_s=self.deadline_s,
        )

    def holder(self) -> bool:
        """The Lease names us, as far as the apiserver last told us."""
        return (
            self.renewed_at is not None
            and self.seen is not None
            and (self.seen.holder == self.identity)
        )

    def lease_changed(self) -> None:
        """The Lease watch saw a change (or listed again)."""
        self.wake.set()

    def _note(self, lease: Lease | None) -> None:
        self.current = lease
        self.seen = (
            None
            if lease is None
            else election.observe(self.seen, lease, now=self.clock(), wall_ms=self.wall_ms())
        )

    def _announce(self) -> None:
        now = self.leading()
        if now != self._was_leading:
            self._was_leading = now
            self.log.info("leadership", leading=now, lease=self.name)
            self.on_change()

    def _body(self, *, holder: str | None, acquire: bool, duration_s: int) -> dict[str, Any]:
        now_ms = self.wall_ms()
        current = self.current
        transitions = current.transitions if current is not None else 0
        acquire_ms = current.acquire_ms if current is not None else None
        if acquire:
            transitions, acquire_ms = transitions + (current is not None), now_ms
        return lease_body(
            self.name,
            self.api.namespace,
            holder=holder,
            duration_s=duration_s,
            renew_ms=now_ms,
            acquire_ms=acquire_ms,
            transitions=transitions,
            labels={nodes.LEASE_LABEL: "leader"},
            resource_version=current.resource_version if current is not None else None,
        )

    async def _step(self) -> float:
        """Do what the Lease's state asks; returns when to look again."""
        now = self.clock()
        holding = self.renewed_at is not None
        if not holding:
            self._note(self.observed())
        step = election.decide(
            self.seen, me=self.identity, renewed_at=self.renewed_at, now=now, renew_s=self.renew_s
        )
        if step.kind == "wait":
            return step.at
        sent = self.clock()
        if self.unanswered_since is None:
            self.unanswered_since = sent
        lease: Lease | None
        try:
            if step.kind == "create":
                lease = await self.api.create(
                    self._body(holder=self.identity, acquire=True, duration_s=self.lease_s)
                )
            else:
                lease = await self.api.replace(
                    self.name,
                    self._body(
                        holder=self.identity,
                        acquire=step.kind == "take",
                        duration_s=self.lease_s,
                    ),
                )
        except Conflict:
            # Someone else wrote it: read the truth, and stand by.
            self.unanswered_since = None
            self.renewed_at = None
            self._note(await self.api.get(self.name))
            return self.clock()
        except Refused:
            self.unanswered_since = None
            self.refused = True
            raise
        self.unanswered_since = None
        self.refused = False
        if lease is None:
            self.renewed_at = None
            self._note(None)
            return self.clock()
        self.renewed_at = sent
        self._note(lease)
        if step.kind != "renew":
            self.log.info("leader lease acquired", transitions=lease.transitions)
        return sent + self.renew_s

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    at = await self._step()
                except LeaseError as exc:
                    self.log.warning("leader lease call failed", error=str(exc))
                    at = self.clock() + min(self.renew_s, 1.0)
                self.on_step()
                self._announce()
                self.wake.clear()
                wait = at - self.clock()
                if self.leading() and self.renewed_at is not None:
                    # Step down on time even while a call hangs.
                    wait = min(wait, self.renewed_at + self.deadline_s - self.clock())
                if wait > 0:
                    waits = [asyncio.ensure_future(stop.wait())]
                    if self.renewed_at is None:
                        waits.append(asyncio.ensure_future(self.wake.wait()))
                    try:
                        await asyncio.wait(waits, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for w in waits:
                            w.cancel()
                self._announce()
        finally:
            await self.release()

    async def release(self) -> None:
        """Give the Lease up (a clean shutdown), so a standby takes over at once."""
        if not self.leading():
            return
        self.renewed_at = None
        self._announce()
        with contextlib.suppress(LeaseError):
            await asyncio.wait_for(
                self.api.replace(self.name, self._body(holder=None, acquire=False, duration_s=1)),
                timeout=2.0,
            )
            self.log.info("leader lease released")


def pod_owner(name: str, uid: str) -> dict[str, Any] | None:
    """An ownerReference to the agent's Pod (None without its uid).

    Not a controller reference, and without ``blockOwnerDeletion`` (which would need
    ``update`` on ``pods/finalizers``): the garbage collector deletes the Lease once the
    Pod is gone, and the Pod's deletion never waits for it."""
    if not uid:
        return None
    return {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid}


class NodeLease:
    """Renew this pod's node Lease, carrying its probe verdicts.

    The Lease is owned by the pod renewing it (an ownerReference, replaced by each new
    pod on the node as it takes the Lease over), so Kubernetes' garbage collector deletes
    it when that pod is deleted: at a rolling update the next pod has already adopted it
    or creates it again; when the node is deleted its pods go, and with them the Lease;
    when the agent leaves a node for good, the node is judged on its Kubernetes
    conditions alone, as a node that never had an agent. Owning it by the Node instead
    would need ``get`` on Nodes (its uid is not in the downward API) and would leave an
    expired Lease, and the node's endpoints out of the answers, for as long as the Node
    lives without an agent.
    """

    def __init__(
        self,
        api: LeaseApi,
        *,
        node: str,
        identity: str,
        owner: Mapping[str, Any] | None = None,
        duration_s: int = 30,
        renew_s: float = 10.0,
        debounce_s: float = 0.02,
        wall_ms: WallMs = _wall_ms,
    ) -> None:
        self.api = api
        self.node = node
        self.identity = identity
        self.owner = owner
        self.duration_s = duration_s
        self.renew_s = renew_s
        self.debounce_s = debounce_s
        self.wall_ms = wall_ms
        self.name = nodes.lease_name(node)
        self.verdicts: dict[VerdictKey, ProbeState] = {}
        self.current: Lease | None = None
        self.dirty = asyncio.Event()
        self.renewals = 0
        self.log = log.bind(node=node, lease=self.name)

    def publish(self, verdicts: Mapping[VerdictKey, ProbeState]) -> None:
        self.verdicts = dict(verdicts)
        self.dirty.set()

    def _body(self) -> dict[str, Any]:
        current = self.current
        return lease_body(
            self.name,
            self.api.namespace,
            holder=self.identity,
            duration_s=self.duration_s,
            renew_ms=self.wall_ms(),
            acquire_ms=current.acquire_ms if current is not None else self.wall_ms(),
            transitions=current.transitions if current is not None else 0,
            labels={nodes.LEASE_LABEL: "node"},
            annotations={
                nodes.NODE_ANNOTATION: self.node,
                nodes.VERDICTS_ANNOTATION: nodes.encode(self.verdicts),
            },
            resource_version=current.resource_version if current is not None else None,
            owner=self.owner,
        )

    async def renew(self) -> None:
        for _ in range(3):
            try:
                if self.current is None:
                    self.current = await self.api.get(self.name)
                if self.current is None:
                    self.current = await self.api.create(self._body())
                else:
                    self.current = await self.api.replace(self.name, self._body())
                self.renewals += 1
                return
            except Conflict:
                self.current = await self.api.get(self.name)
        raise LeaseError("node lease: conflicts on every try")

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.dirty.clear()
            try:
                await self.renew()
                wait = self.renew_s
            except LeaseError as exc:
                self.log.warning("node lease renewal failed", error=str(exc))
                wait = min(1.0, self.renew_s)
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.dirty.wait())]
            try:
                await asyncio.wait(waits, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            if self.dirty.is_set():
                await sleep_or_stop(stop, self.debounce_s)
