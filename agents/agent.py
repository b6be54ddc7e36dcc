"""One cluster's agent: probe, report the whole state, renew the lease, heal the registry.

The report loop is the heart of it::

    need_full ─▶ report whole state ─ok─▶ heartbeat every interval ─409─▶ need_full
        ▲                │ error                 │ error                     │
        └── back off ◀───┘◀──────────────────────┘                           │
        ▲                                                                    │
        └────────── the source or a probe verdict changed (coalesced) ◀──────┘

After any error the next successful call is a whole report, so a registry that lost its
data (Redis restarted empty, failed over) is whole again within one heartbeat interval.

Changes are coalesced twice: a report waits ``coalesce_s`` after the first change (a
burst of watch events or probe verdicts becomes one report), and two reports are at least
``min_report_interval_s`` apart (a rolling update of a hundred pods becomes a handful of
reports, not hundreds). Both together bound the delay from a change to its report.

What exists comes from a :class:`agents.source.Source`; the loop reports only while the
source is ready (a Kubernetes source has listed everything once) and says this agent is
the cluster's reporter (its leader). Probing is supervised here: one task per probed
service, restarted when the service's check changes, reading the current targets each
round, so endpoints that come and go are picked up without restarting anything.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable

import structlog

from agents import probe, probe_state
from agents.reporter import Refused, RegistryClient, ReportError, Stale
from agents.source import Check, Source, Target, VerdictKey
from agents.static import StaticFeed, StaticSource
from registry.aio import sleep_or_stop
from registry.model import ProbeState, Report

log = structlog.get_logger("agents")

Prober = Callable[[Check, Target], Awaitable[tuple[bool, str]]]


class Agent:
    def __init__(
        self,
        *,
        cluster: str,
        source: Source | StaticSource,
        client: RegistryClient,
        heartbeat_interval_s: float = 2.0,
        coalesce_s: float = 0.02,
        min_report_interval_s: float = 0.05,
        clock: Callable[[], int] = time.time_ns,
        prober: Prober = probe.check,
        rng: random.Random | None = None,
    ) -> None:
        self.cluster = cluster
        self.source: Source = StaticFeed(source) if isinstance(source, StaticSource) else source
        self.client = client
        self.heartbeat_interval_s = heartbeat_interval_s
        self.coalesce_s = coalesce_s
        self.min_report_interval_s = min_report_interval_s
        self.clock = clock
        self.prober = prober
        self.rng = rng or random.Random()
        self.tracks: dict[VerdictKey, probe_state.Track] = {}
        self.changed = asyncio.Event()
        self._jobs_changed = asyncio.Event()
        self.seq = 0
        self.reports = 0
        self.heartbeats = 0
        self.reported_at = -math.inf
        """Monotonic time of the last successful report."""
        self.log = log.bind(cluster=cluster)

    # -- state ----------------------------------------------------------------------

    def verdicts(self) -> dict[VerdictKey, ProbeState]:
        return {
            key: ProbeState(healthy=track.healthy, detail=track.detail[:200])
            for key, track in self.tracks.items()
        }

    def state(self, seq: int) -> Report:
        services = self.source.report_services(self.verdicts())
        return Report(cluster=self.cluster, seq=seq, services=services)

    def _next_seq(self) -> int:
        return max(self.seq + 1, self.clock())

    def _source_changed(self) -> None:
        self.changed.set()
        self._jobs_changed.set()

    # -- probing --------------------------------------------------------------------

    async def _supervise_probes(self, stop: asyncio.Event) -> None:
        running: dict[str, tuple[Check, asyncio.Task[None]]] = {}
        try:
            while not stop.is_set():
                self._jobs_changed.clear()
                jobs = self.source.probe_jobs()
                for key, (check, task) in list(running.items()):
                    job = jobs.get(key)
                    if job is None or job.check != check or task.done():
                        task.cancel()
                        del running[key]
                        if job is None:
                            self._forget(key, keep=set())
                for key, job in jobs.items():
                    if key not in running:
                        task = asyncio.create_task(self._probe_loop(key, job.check, stop))
                        running[key] = (job.check, task)
                await _first(stop.wait(), self._jobs_changed.wait())
        finally:
            for _check, task in running.values():
                task.cancel()
            await asyncio.gather(*(t for _c, t in running.values()), return_exceptions=True)

    def _forget(self, key: str, keep: set[str]) -> bool:
        gone = [k for k in self.tracks if k[0] == key and k[1] not in keep]
        for k in gone:
            del self.tracks[k]
        return bool(gone)

    async def _probe_loop(self, key: str, check: Check, stop: asyncio.Event) -> None:
        while not stop.is_set():
            job = self.source.probe_jobs().get(key)
            if job is None or job.check != check:
                return
            results = await asyncio.gather(*(self.prober(check, t) for t in job.targets))
            flipped = False
            for target, (ok, detail) in zip(job.targets, results, strict=True):
                before = self.tracks.get((key, target.address))
                after = probe_state.observe(before, ok, detail, rise=check.rise, fall=check.fall)
                self.tracks[(key, target.address)] = after
                if before is None or before.healthy != after.healthy:
                    self.log.info(
                        "probe verdict",
                        service=key,
                        address=target.address,
                        healthy=after.healthy,
                        detail=after.detail,
                    )
                    flipped = True
            latest = self.source.probe_jobs().get(key, job)
            self._forget(key, keep={t.address for t in latest.targets})
            if flipped:
                self.changed.set()
                self.source.verdicts_changed(self.verdicts())
            await sleep_or_stop(stop, check.interval_s)

    async def _first_round(self, stop: asyncio.Event) -> None:
        """Report once the first probe round is in, not an all-unknown state first."""
        jobs = self.source.probe_jobs()
        wanted = {(key, t.address) for key, job in jobs.items() for t in job.targets}
        if not wanted:
            return
        deadline = time.monotonic() + max(job.check.timeout_s for job in jobs.values()) + 1
        while not stop.is_set() and time.monotonic() < deadline:
            if wanted <= set(self.tracks):
                return
            await asyncio.sleep(0.01)

    # -- reporting ------------------------------------------------------------------

    async def _report_loop(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        need_full = True
        first = True
        reporting = False
        backoff = 0.2
        while not stop.is_set():
            if not (self.source.ready() and self.source.reporting()):
                if reporting:
                    self.log.info("no longer this cluster's reporter")
                reporting = False
                need_full = True
                self.changed.clear()
                await self._wait(stop, self.heartbeat_interval_s)
                continue
            if not reporting:
                self.log.info("reporting for the cluster")
                reporting = True
            if first:
                await self._first_round(stop)
                first = False
            try:
                if need_full or self.changed.is_set():
                    delay = self.coalesce_s
                    if not need_full:
                        since = loop.time() - self.reported_at
                        delay = max(delay, self.min_report_interval_s - since)
                    await asyncio.sleep(delay)
                    if not self.source.reporting():
                        continue
                    self.changed.clear()
                    report = self.state(self._next_seq())
                    try:
                        await self.client.report(report)
                    except Stale as exc:
                        self.seq = exc.stored_seq
                        continue
                    self.seq = report.seq
                    self.reports += 1
                    self.reported_at = loop.time()
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
                await sleep_or_stop(stop, backoff * (0.5 + self.rng.random()))
                backoff = min(backoff * 2, 5.0 if not isinstance(exc, Refused) else 30.0)

    async def _wait(self, stop: asyncio.Event, timeout: float) -> None:
        """Sleep ``timeout``, waking early for a stop or a change."""
        await _first(stop.wait(), self.changed.wait(), timeout=timeout)

    async def run(self, stop: asyncio.Event) -> None:
        self.source.subscribe(self._source_changed)
        tasks = [
            asyncio.create_task(self._supervise_probes(stop)),
            asyncio.create_task(self._report_loop(stop)),
        ]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _first(*waits: Awaitable[object], timeout: float | None = None) -> None:
    """Wait until the first of ``waits`` completes (or ``timeout``), cancelling the rest."""
    futures = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(futures, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in futures:
            future.cancel()
