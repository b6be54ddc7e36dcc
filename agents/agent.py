"""One cluster's agent: probe, report the whole state, renew the lease, heal the registry.

The report loop is the heart of it::

    need_full ─▶ report whole state ─ok─▶ heartbeat every interval ─409─▶ need_full
        ▲                │ error                 │ error                     │
        └── back off ◀───┘◀──────────────────────┘                           │
        ▲                                                                    │
        └────────────── a probe verdict changed (coalesced) ◀────────────────┘

After any error the next successful call is a whole report, so a registry that lost its
data (Redis restarted empty, failed over) is whole again within one heartbeat interval.
Probe changes are coalesced for a few milliseconds, so a burst of changes is one report.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

import structlog

from agents import probe, probe_state
from agents.reporter import Refused, RegistryClient, ReportError, Stale
from agents.static import ServiceSpec, StaticSource
from registry.aio import sleep_or_stop
from registry.model import Conditions, Endpoint, ProbeState, Report, Service

log = structlog.get_logger("agents")

Prober = Callable[[str, int, float], Awaitable[tuple[bool, str]]]


async def _tcp_probe(address: str, port: int, timeout: float) -> tuple[bool, str]:
    return await probe.tcp(address, port, timeout=timeout)


class Agent:
    def __init__(
        self,
        *,
        cluster: str,
        source: StaticSource,
        client: RegistryClient,
        heartbeat_interval_s: float = 2.0,
        coalesce_s: float = 0.02,
        clock: Callable[[], int] = time.time_ns,
        prober: Prober = _tcp_probe,
    ) -> None:
        self.cluster = cluster
        self.source = source
        self.client = client
        self.heartbeat_interval_s = heartbeat_interval_s
        self.coalesce_s = coalesce_s
        self.clock = clock
        self.prober = prober
        self.tracks: dict[tuple[str, str], probe_state.Track] = {}
        self.changed = asyncio.Event()
        self.seq = 0
        self.reports = 0
        self.heartbeats = 0
        self.log = log.bind(cluster=cluster)

    # -- state ----------------------------------------------------------------------

    def _endpoint(self, spec: ServiceSpec, index: int) -> Endpoint:
        ep = spec.endpoints[index]
        track = self.tracks.get((f"{spec.namespace}/{spec.name}", ep.address))
        verdict = (
            ProbeState(healthy=track.healthy, detail=track.detail) if track is not None else None
        )
        return Endpoint(
            address=ep.address,
            node=ep.node,
            conditions=Conditions(ready=ep.ready, serving=ep.ready, terminating=False),
            probe=verdict,
        )

    def state(self, seq: int) -> Report:
        services = tuple(
            Service(
                namespace=spec.namespace,
                name=spec.name,
                ports=spec.ports,
                ttl=spec.ttl,
                endpoints=tuple(self._endpoint(spec, i) for i in range(len(spec.endpoints))),
            )
            for spec in self.source.services
        )
        return Report(cluster=self.cluster, seq=seq, services=services)

    def _next_seq(self) -> int:
        return max(self.seq + 1, self.clock())

    # -- probing --------------------------------------------------------------------

    async def _probe_service(self, spec: ServiceSpec, stop: asyncio.Event) -> None:
        assert spec.probe is not None
        settings = spec.probe
        key = f"{spec.namespace}/{spec.name}"
        while not stop.is_set():
            results = await asyncio.gather(
                *(
                    self.prober(ep.address, settings.port, settings.timeout_s)
                    for ep in spec.endpoints
                )
            )
            for ep, (ok, detail) in zip(spec.endpoints, results, strict=True):
                before = self.tracks.get((key, ep.address))
                after = probe_state.observe(
                    before, ok, detail, rise=settings.rise, fall=settings.fall
                )
                self.tracks[(key, ep.address)] = after
                if before is None or before.healthy != after.healthy:
                    self.log.info(
                        "probe verdict",
                        service=key,
                        address=ep.address,
                        healthy=after.healthy,
                        detail=after.detail,
                    )
                    self.changed.set()
            await sleep_or_stop(stop, settings.interval_s)

    # -- reporting ------------------------------------------------------------------

    async def _report_loop(self, stop: asyncio.Event) -> None:
        need_full = True
        backoff = 0.2
        while not stop.is_set():
            try:
                if need_full or self.changed.is_set():
                    await asyncio.sleep(self.coalesce_s)
                    self.changed.clear()
                    report = self.state(self._next_seq())
                    try:
                        await self.client.report(report)
                    except Stale as exc:
                        self.seq = exc.stored_seq
                        continue
                    self.seq = report.seq
                    self.reports += 1
                    if need_full:
                        self.log.info(
                            "whole state reported", seq=report.seq, services=len(report.services)
                        )
                    need_full = False
                else:
                    if not await self.client.heartbeat(self.seq):
                        self.log.info("registry lacks our report; sending the whole state")
                        need_full = True
                        continue
                    self.heartbeats += 1
                backoff = 0.2
                await self._wait(stop, self.heartbeat_interval_s)
            except ReportError as exc:
                need_full = True
                level = self.log.error if isinstance(exc, Refused) else self.log.warning
                level("registry call failed; will send the whole state again", error=str(exc))
                await self._wait(stop, backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 5.0 if not isinstance(exc, Refused) else 30.0)

    async def _wait(self, stop: asyncio.Event, timeout: float) -> None:
        """Sleep ``timeout``, waking early for a stop or a probe change."""
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.changed.wait())]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def run(self, stop: asyncio.Event) -> None:
        probed = [s for s in self.source.services if s.probe is not None]
        tasks = [asyncio.create_task(self._probe_service(s, stop)) for s in probed]
        if probed:
            # Report once the first probe round is in, not an all-unknown state first.
            await self._first_round(stop, probed)
        tasks.append(asyncio.create_task(self._report_loop(stop)))
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _first_round(self, stop: asyncio.Event, probed: list[ServiceSpec]) -> None:
        wanted = {(f"{s.namespace}/{s.name}", e.address) for s in probed for e in s.endpoints}
        deadline = time.monotonic() + max(s.probe.timeout_s for s in probed if s.probe) + 1
        while not stop.is_set() and time.monotonic() < deadline:
            if wanted <= set(self.tracks):
                return
            await asyncio.sleep(0.01)
