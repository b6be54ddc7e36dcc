"""The Kubernetes source: four informers, two kinds of Lease, and the pure core.

It implements :class:`agents.source.Source` for :class:`agents.agent.Agent`:

* ``ready`` once the Services, EndpointSlices and Leases have each been listed, so the
  first report after a start or a takeover is the whole picture, never an empty one;

A Service's endpoints are every slice that names it by ``kubernetes.io/service-name``, as
kube-proxy reads them. Two slice informers find them: the EndpointSlice controller's
slices carry the Service's labels (the export label among them), so they are selected
on the server by the export label; every other slice (mirrored from a selector-less
Service's Endpoints, which carry the Endpoints object's labels; written by hand or by
another controller) is selected by the service-name label and not the controller's
managed-by value, and counts when its Service is exported. Those are few in a cluster,
so the second watch is small.
* ``reporting`` while this pod holds the leader Lease, and ``holding`` while it must
  only renew the registry lease: its apiserver is out, or its watches have not resynced
  since (:mod:`.outage` judges; nothing stale is ever reported as fresh);
* ``probe_jobs`` — the endpoints on this pod's node (and, for the leader, those without
  a node) of Services that ask for a probe;
* ``report_services`` — :func:`agents.kubernetes.cluster.build` over the caches, with
  this pod's verdicts and the other nodes' (read from their Leases), for the whole
  cluster or for just the Services asked for.

A watch event names the Service it touches (a slice's owner before and after the event),
a node Lease names the services whose published verdicts changed (or, when a node's
Lease expires or comes back, the services with endpoints on that node); a relist or a
change of leadership names nothing, meaning "anything may have changed". Merging is
cached per Service and redone only for Services whose slices or Service object changed,
so a watch event costs one Service's merge and one Service's record, not the cluster's.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Collection, Mapping
from functools import partial
from typing import Any

import structlog
from kubernetes_asyncio.client import ApiClient, CoordinationV1Api, CoreV1Api, DiscoveryV1Api

from agents.kubernetes import annotations as settings_from
from agents.kubernetes import cluster, election, nodes, outage, sharding
from agents.kubernetes.informer import Informer, WatchSettings
from agents.kubernetes.leases import Elector, LeaseApi, NodeLease, pod_owner
from agents.kubernetes.merge import Merged, merge
from agents.kubernetes.objects import (
    SERVICE_NAME_LABEL,
    EndpointSlice,
    Key,
    KubeService,
    Lease,
    parse_lease,
    parse_service,
    parse_slice,
)
from agents.source import Notify, ProbeJob, VerdictKey
from registry.aio import sleep_or_stop
from registry.model import ProbeState, Service

log = structlog.get_logger("agents.kubernetes")

MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
CONTROLLER = "endpointslice-controller.k8s.io"
OTHER_SLICES = f"{SERVICE_NAME_LABEL},{MANAGED_BY_LABEL}!={CONTROLLER}"
"""Slices the EndpointSlice controller did not write (they need not carry the Service's
labels): found by the service-name label; ``!=`` also matches slices without the label."""


class KubernetesSource:
    def __init__(
        self,
        client: ApiClient,
        *,
        node: str,
        identity: str,
        namespace: str,
        export_selector: str,
        pod_uid: str = "",
        watch: WatchSettings | None = None,
        leader_lease_s: int = 4,
        leader_renew_s: float = 1.0,
        leader_deadline_s: float = 3.0,
        node_lease_s: int = 30,
        outage_grace_s: float = 180.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.node = node
        self.outage_grace_s = outage_grace_s
        self.identity = identity
        self.namespace = namespace
        self.clock = clock
        rng = rng or random.Random()
        discovery: Any = DiscoveryV1Api(client)
        core: Any = CoreV1Api(client)
        coordination: Any = CoordinationV1Api(client)
        common: dict[str, Any] = {
            "settings": watch or WatchSettings(),
            "on_freshness": self._freshness,
            "rng": rng,
            "clock": clock,
        }
        list_slices = discovery.list_endpoint_slice_for_all_namespaces
        self.slices: Informer[EndpointSlice] = Informer(
            "endpointslices",
            partial(list_slices, label_selector=export_selector),
            parse_slice,
            on_change=self._slice_changed,
            **common,
        )
        self.other_slices: Informer[EndpointSlice] = Informer(
            "endpointslices-other",
            partial(list_slices, label_selector=OTHER_SLICES),
            parse_slice,
            on_change=self._slice_changed,
            **common,
        )
        self.services: Informer[KubeService] = Informer(
            "services",
            partial(core.list_service_for_all_namespaces, label_selector=export_selector),
            parse_service,
            on_change=self._service_changed,
            **common,
        )
        self.leases: Informer[Lease] = Informer(
            "leases",
            partial(
                coordination.list_namespaced_lease, namespace, label_selector=nodes.LEASE_LABEL
            ),
            parse_lease,
            on_change=self._lease_changed,
            **{**common, "on_freshness": self._leases_freshness},
        )
        lease_api = LeaseApi(
            client, namespace, timeout_s=max(1.0, leader_deadline_s - leader_renew_s)
        )
        self.elector = Elector(
            lease_api,
            identity=identity,
            observed=lambda: self.leases.items.get((namespace, nodes.LEADER_LEASE)),
            lease_s=leader_lease_s,
            renew_s=leader_renew_s,
            deadline_s=leader_deadline_s,
            on_change=self._leadership_changed,
            on_step=self._freshness,
            clock=clock,
        )
        self.node_lease = NodeLease(
            lease_api,
            node=node,
            identity=identity,
            owner=pod_owner(identity, pod_uid),
            duration_s=node_lease_s,
            renew_s=node_lease_s / 3,
        )
        self._notify: Notify = lambda keys: None
        self._owner: dict[Key, Key] = {}
        self._by_service: dict[Key, dict[Key, EndpointSlice]] = {}
        self._dirty: set[Key] = set()
        self._everything_dirty = True
        self._merged: dict[Key, Merged] = {}
        self._parsed: dict[Key, settings_from.Parsed] = {}
        self._settings_of: dict[Key, tuple[Mapping[str, str], settings_from.Parsed]] = {}
        self._jobs: dict[str, ProbeJob] | None = None
        self._seen: dict[Key, election.Seen] = {}
        self._last_peers = nodes.Peers()
        self._leases_changed = asyncio.Event()
        self._lease_time = outage.Paused()
        """Node Lease expiry is judged on this clock: it stands still while the Lease
        watch is stale (no renewal could reach us)."""
        self._standing_changed = asyncio.Event()
        self._alive = 0
        self._notes: set[tuple[str, str]] = set()
        self.annotation_problems = 0
        """Invalid-annotation events seen (a Service's set of problems changed)."""

    # -- change tracking ------------------------------------------------------------

    def _slice_changed(self, key: Key | None) -> None:
        if key is None:
            self._everything_dirty = True
            self._changed(None)
            return
        touched: set[Key] = set()
        old = self._owner.pop(key, None)
        if old is not None:
            self._by_service.get(old, {}).pop(key, None)
            touched.add(old)
        new = self._slice(key)
        if new is not None:
            self._owner[key] = new.service_key
            self._by_service.setdefault(new.service_key, {})[key] = new
            touched.add(new.service_key)
        self._dirty |= touched
        self._changed(touched)

    def _slice(self, key: Key) -> EndpointSlice | None:
        """A slice may sit in both informers (a hand-made slice with the export label)."""
        return self.slices.items.get(key) or self.other_slices.items.get(key)

    def _all_slices(self) -> dict[Key, EndpointSlice]:
        return {**self.other_slices.items, **self.slices.items}

    def _service_changed(self, key: Key | None) -> None:
        if key is None:
            self._everything_dirty = True
            self._changed(None)
        else:
            self._dirty.add(key)
            self._changed({key})

    def _lease_changed(self, key: Key | None) -> None:
        self._leases_changed.set()
        self.elector.lease_changed()
        # A renewal that changes no verdict and no expiry changes no report: with a
        # thousand nodes renewing every 10 s, reporting on each would be 100 reports/s.
        self._peers_changed()

    def _peers_changed(self) -> None:
        peers = self.peers()
        if peers == self._last_peers:
            return
        services, nodes_changed = nodes.changes(self._last_peers, peers)
        self._last_peers = peers
        keys = set(services)
        if nodes_changed:
            self._refresh()
            keys.update(
                f"{k[0]}/{k[1]}"
                for k, m in self._merged.items()
                if any(ep.node in nodes_changed for ep in m.endpoints)
            )
        self._jobs = None
        self._notify(keys)

    def _freshness(self) -> None:
        """An informer went stale or resynced, or the elector tried the apiserver."""
        self._standing_changed.set()

    def _leases_freshness(self) -> None:
        now = self.clock()
        if self.leases.stale_since is None:
            self._lease_time = self._lease_time.resume(now)
        else:
            self._lease_time = self._lease_time.pause(now)
        self._leases_changed.set()
        self._freshness()

    def _lease_now(self) -> float:
        return self._lease_time.at(self.clock())

    def verdict(self) -> outage.Verdict:
        """This pod's standing now: report, hold (heartbeats only) or stand by."""
        stale = [i.stale_since for i in self.informers if i.stale_since is not None]
        elector = self.elector
        return outage.judge(
            holder=elector.holder(),
            renewed_at=elector.renewed_at,
            refused=elector.refused,
            unanswered_since=elector.unanswered_since,
            stale_since=min(stale) if stale else None,
            now=self.clock(),
            deadline_s=elector.deadline_s,
            grace_s=self.outage_grace_s,
        )

    def _leadership_changed(self) -> None:
        self._jobs = None
        self._notify(None)

    def _changed(self, keys: set[Key] | None) -> None:
        self._jobs = None
        self._notify(None if keys is None else {f"{k[0]}/{k[1]}" for k in keys})

    def _refresh(self) -> None:
        if self._everything_dirty:
            self._everything_dirty = False
            self._dirty.clear()
            every = self._all_slices()
            self._owner = {k: s.service_key for k, s in every.items()}
            self._by_service = {}
            for k, s in every.items():
                self._by_service.setdefault(s.service_key, {})[k] = s
            self._merged = {k: merge(v.values()) for k, v in self._by_service.items()}
            dirty = set(self.services.items) | set(self._parsed)
        else:
            dirty, self._dirty = self._dirty, set()
            for key in dirty:
                slices = self._by_service.get(key)
                if slices:
                    self._merged[key] = merge(slices.values())
                else:
                    self._by_service.pop(key, None)
                    self._merged.pop(key, None)
        for key in dirty:
            service = self.services.items.get(key)
            if service is None:
                self._parsed.pop(key, None)
                self._settings_of.pop(key, None)
                continue
            cached = self._settings_of.get(key)
            if cached is not None and cached[0] == service.annotations:
                self._parsed[key] = cached[1]
                continue
            parsed = settings_from.parse(service.annotations)
            self._parsed[key] = parsed
            self._settings_of[key] = (service.annotations, parsed)
            if parsed.problems:
                self.annotation_problems += 1
                log.warning(
                    "invalid globaldns.io annotations; the service is published with defaults",
                    service=f"{key[0]}/{key[1]}",
                    problems=list(parsed.problems),
                )

    # -- the Source protocol --------------------------------------------------------

    def subscribe(self, notify: Notify) -> None:
        self._notify = notify

    def ready(self) -> bool:
        return all(i.synced.is_set() for i in self.informers)

    @property
    def informers(self) -> tuple[Informer[Any], ...]:
        return (self.slices, self.other_slices, self.services, self.leases)

    def reporting(self) -> bool:
        return self.verdict().standing != "standby"

    def holding(self) -> bool:
        return self.verdict().standing == "hold"

    def probe_jobs(self) -> Mapping[str, ProbeJob]:
        if self._jobs is None:
            self._refresh()
            self._jobs = sharding.probe_jobs(
                self.services.items,
                {k: p.settings for k, p in self._parsed.items()},
                self._merged,
                node=self.node,
                leading=self.reporting(),
            )
        return self._jobs

    def verdicts_changed(self, verdicts: Mapping[VerdictKey, ProbeState]) -> None:
        self.node_lease.publish(verdicts)

    def peers(self) -> nodes.Peers:
        now = self._lease_now()
        wall = time.time_ns() // 1_000_000
        current = {}
        for key, lease in self.leases.items.items():
            current[key] = election.observe(self._seen.get(key), lease, now=now, wall_ms=wall)
        self._seen = current
        return nodes.peers(self.leases.items.values(), self._seen, now=now)

    def report_services(
        self, verdicts: Mapping[VerdictKey, ProbeState], keys: Collection[str] | None = None
    ) -> tuple[Service, ...]:
        self._refresh()
        only = None if keys is None else {_key(k) for k in keys}
        built = cluster.build(
            self.services.items,
            self._parsed,
            self._merged,
            node=self.node,
            own=verdicts,
            peers=self.peers(),
            only=only,
        )
        notes = set(built.notes)
        for service, note in sorted(notes - self._notes):
            log.info("not reported as is", service=service, why=note)
        if keys is None:
            self._notes = notes
        else:
            asked = set(keys) | {"*"}
            self._notes = {n for n in self._notes if n[0] not in asked} | notes
        return built.services

    # -- running --------------------------------------------------------------------

    async def _expiries(self, stop: asyncio.Event) -> None:
        """Wake the reporter when a node Lease expires (no event says so)."""
        while not stop.is_set():
            self._leases_changed.clear()
            self.peers()
            now = self._lease_now()
            pending = [
                election.expires_at(seen)
                for seen in self._seen.values()
                if not election.expired(seen, now)
            ]
            wait = (min(pending) - now + 0.01) if pending else 60.0
            waits = [
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self._leases_changed.wait()),
            ]
            try:
                done, _ = await asyncio.wait(
                    waits, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for w in waits:
                    w.cancel()
            if not done:
                self._peers_changed()

    async def _standing(self, stop: asyncio.Event) -> None:
        """Say when this pod's standing changes (the agent then asks again), and retry
        stale watches at once when the apiserver answers again."""
        last: outage.Standing | None = None
        while not stop.is_set():
            self._standing_changed.clear()
            verdict = self.verdict()
            if verdict.standing != last:
                level = log.warning if verdict.standing == "hold" else log.info
                level("standing", standing=verdict.standing, why=verdict.reason)
                last = verdict.standing
                self._jobs = None
                self._notify(())  # wakes the agent; it reads reporting() and holding()
            # Any new sign of life (a watch resynced, a Lease call answered): the
            # apiserver is back, so the watches still backing off retry now.
            alive = sum(i.stale_since is None for i in self.informers)
            alive += self.elector.unanswered_since is None
            if alive > self._alive:
                for informer in self.informers:
                    if informer.stale_since is not None:
                        informer.poke()
            self._alive = alive
            wait = verdict.until - self.clock()
            waits = [
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self._standing_changed.wait()),
            ]
            try:
                await asyncio.wait(
                    waits,
                    timeout=None if wait == float("inf") else max(0.0, wait) + 0.001,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                for w in waits:
                    w.cancel()

    async def run(self, stop: asyncio.Event) -> None:
        """Run the informers, the node Lease and, once synced, the election."""
        tasks = [
            asyncio.create_task(self.slices.run(), name="informer-endpointslices"),
            asyncio.create_task(self.other_slices.run(), name="informer-endpointslices-other"),
            asyncio.create_task(self.services.run(), name="informer-services"),
            asyncio.create_task(self.leases.run(), name="informer-leases"),
            asyncio.create_task(self.node_lease.run(stop), name="node-lease"),
            asyncio.create_task(self._expiries(stop), name="lease-expiries"),
            asyncio.create_task(self._standing(stop), name="standing"),
        ]
        try:
            while not self.ready() and not stop.is_set():
                await sleep_or_stop(stop, 0.01)
            if not stop.is_set():
                self._notify(None)
                tasks.append(asyncio.create_task(self.elector.run(stop), name="elector"))
            await stop.wait()
        finally:
            election_tasks = [t for t in tasks if t.get_name() == "elector"]
            # Release leadership first (cleanly), then stop everything else.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*election_tasks, return_exceptions=True)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _key(text: str) -> Key:
    namespace, _, name = text.partition("/")
    return (namespace, name)
