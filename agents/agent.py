"""One cluster's agent: probe, report the whole state then deltas, renew the lease.

The agent is the I/O shell around three pure parts: the source says what exists and
which services changed (:mod:`agents.source`), :mod:`agents.schedule` decides when to
report what (whole state first, deltas after, coalescing, heartbeats, back-off, a whole
state again after any doubt) and :mod:`agents.delta` decides what a delta carries (the
services whose content differs from what the registry acknowledged). The report loop
feeds the schedule what happened and carries out what it says; it holds, beside the
schedule's state, the content hash of every service the registry acknowledged.

After any doubt the next successful call is a whole report, so a registry that lost its
data (Redis restarted empty, failed over) is whole again within one heartbeat interval.

What exists comes from a :class:`agents.source.Source`; the loop reports only while the
source is ready (a Kubernetes source has listed everything once) and says this agent is
the cluster's reporter (its leader). Probing is supervised here: one task per probed
service, restarted when the service's check changes, reading the current targets each
round, so endpoints that come and go are picked up without restarting anything. A
verdict that flips names its service, so it costs a one-service delta.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Collection

import structlog

from agents import delta, probe, probe_state, schedule
from agents.reporter import (
    Refused,
    RegistryClient,
    ReportError,
    Resync,
    Stale,
    StoreUnavailable,
    Throttled,
)
from agents.source import Check, Source, Target, VerdictKey
from agents.static import StaticFeed, StaticSource
from registry.aio import sleep_or_stop
from registry.grants import Grant
from registry.model import ProbeState, Report, Service

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
        self.timing = schedule.Timing(
            heartbeat_interval_s=heartbeat_interval_s,
            coalesce_s=coalesce_s,
            min_report_interval_s=min_report_interval_s,
        )
        self.clock = clock
        """Wall clock in ns: report seqs and ``observed_ms``."""
        self.prober = prober
        self.rng = rng or random.Random()
        self.tracks: dict[VerdictKey, probe_state.Track] = {}
        self.schedule = schedule.State()
        self.acked: dict[str, str] = {}
        """Content hash of each service the registry acknowledged, by key."""
        self.grant: Grant | None = None
        """What the registry lets this cluster export (None: not known yet, send all)."""
        self.grant_refresh_s = 300.0
        self._grant_asked = asyncio.Event()
        """Set once the grant was asked for (answered or not): the first report waits."""
        self._left_out: dict[str, str] = {}
        """Services left out of reports (or reported without their policy), and why."""
        self._in_doubt: tuple[int, delta.Delta] | None = None
        """A delta that failed while holding (its seq, its changes): the registry may hold it."""
        self._inbox: list[schedule.Changed] = []
        self._woken = asyncio.Event()
        self._jobs_changed = asyncio.Event()
        self.reports = 0
        """Reports the registry accepted (whole states and deltas)."""
        self.whole_reports = 0
        self.deltas = 0
        self.unchanged = 0
        """Deltas not sent: the services named had not changed after all."""
        self.resyncs = 0
        self.throttled = 0
        """Doubts that made the next report a whole state (409 resync, error, lost lease)."""
        self.heartbeats = 0
        self.log = log.bind(cluster=cluster)

    @property
    def seq(self) -> int:
        """The seq the registry acknowledged last (0: none yet)."""
        return self.schedule.acked_seq or 0

    # -- state ----------------------------------------------------------------------

    def verdicts(self) -> dict[VerdictKey, ProbeState]:
        return {
            key: ProbeState(healthy=track.healthy, detail=track.detail[:200])
            for key, track in self.tracks.items()
        }

    def changed(self, keys: Collection[str] | None, *, probed: bool = False) -> None:
        """Services ``keys`` (None: any) may differ: the sources' and probes' callback
        (``probed``: this agent's own probes changed a verdict)."""
        observed = self.clock() // 1_000_000
        self._inbox.append(
            schedule.Changed(
                None if keys is None else frozenset(keys), observed_ms=observed, probed=probed
            )
        )
        self._woken.set()

    def _source_changed(self, keys: Collection[str] | None) -> None:
        self.changed(keys)
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
                        if job is None and self._forget(key, keep=set()):
                            self.changed({key}, probed=True)
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
                self.changed({key}, probed=True)
                self.source.verdicts_changed(self.verdicts())
            await sleep_or_stop(stop, check.interval_s)

    async def _first_round(self, stop: asyncio.Event) -> None:
        """Report once the grant was asked for and the first probe round is in, not an
        all-unknown state first."""
        await _first(stop.wait(), self._grant_asked.wait())
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

    def _events(self) -> list[schedule.Event]:
        events: list[schedule.Event] = list(self._inbox)
        self._inbox.clear()
        self._woken.clear()
        active = self.source.ready() and self.source.reporting()
        holding = active and self.source.holding()
        was_holding = self.schedule.holding
        if active != self.schedule.active:
            self.log.info("reporting for the cluster" if active else "no longer the reporter")
            events.insert(0, schedule.Active(active))
            was_holding = False  # becoming (in)active starts the schedule afresh
        if holding != was_holding:
            self.log.info(
                "holding the registry lease; reports wait" if holding else "reports resume"
            )
            events.insert(1 if active != self.schedule.active else 0, schedule.Holding(holding))
        return events

    async def _report_loop(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        first = True
        while not stop.is_set():
            for event in self._events():
                self._apply(event, loop.time())
            self.schedule, action = schedule.decide(
                self.schedule, now=loop.time(), timing=self.timing
            )
            if isinstance(action, schedule.Wait):
                await self._wait(stop, action.until - loop.time())
                continue
            if first and isinstance(action, schedule.SendWhole):
                first = False
                await self._first_round(stop)
            self._apply(await self._call(action), loop.time())

    def _apply(self, event: schedule.Event, now: float) -> None:
        self.schedule = schedule.apply(
            self.schedule, event, now=now, timing=self.timing, rng=self.rng
        )

    async def _call(self, action: schedule.Call) -> schedule.Event:
        """Carry out one call to the registry; what happened, as a schedule event."""
        if isinstance(action, schedule.SendHeartbeat):
            return await self._heartbeat(action.seq)
        seq = max(action.min_seq, self.clock())
        try:
            built = self._build(action, seq)
        except ValueError as exc:  # a record the model refuses: a bug, not a registry fault
            self.log.error("cannot build the report", error=str(exc))
            return schedule.Failed(refused=True)
        if built is None:
            self.unchanged += 1
            return schedule.Unchanged()
        report, changes = built
        try:
            await self.client.report(report)
        except Resync as exc:
            self.log.info("registry asks for the whole state", seq=seq, stored=exc.stored_seq)
            self.resyncs += 1
            return schedule.Resync(seq, exc.stored_seq)
        except Stale as exc:
            self.log.info("registry holds a newer seq; jumping past it", stored=exc.stored_seq)
            return schedule.Stale(seq, exc.stored_seq)
        except Throttled as exc:
            self.log.warning("registry throttles our reports", retry_after_s=exc.retry_after_s)
            self.throttled += 1
            return schedule.Throttled(exc.retry_after_s)
        except ReportError as exc:
            if changes is not None:
                self._in_doubt = (seq, changes)
            return self._failed(exc, seq=seq)
        self.reports += 1
        self._in_doubt = None
        if changes is None:
            self.acked = delta.hashes(report.services)
            self.whole_reports += 1
            self.log.info("whole state reported", seq=seq, services=len(report.services))
        else:
            delta.amend(self.acked, changes)
            self.deltas += 1
            self.log.debug(
                "delta reported",
                seq=seq,
                upserted=[s.key for s in changes.upserted],
                removed=list(changes.removed),
            )
        return schedule.Reported(seq)

    def _build(
        self, action: schedule.SendWhole | schedule.SendDelta, seq: int
    ) -> tuple[Report, delta.Delta | None] | None:
        """The report ``action`` asks for (with the delta it carries); None: nothing differs."""
        if isinstance(action, schedule.SendWhole):
            services = self._granted(self.source.report_services(self.verdicts()), None)
            whole = Report(
                cluster=self.cluster, seq=seq, services=services, observed_ms=action.observed_ms
            )
            return whole, None
        current = self._granted(
            self.source.report_services(self.verdicts(), keys=action.keys), action.keys
        )
        changes = delta.diff(self.acked, current, action.keys)
        if changes.empty:
            return None
        report = Report(
            cluster=self.cluster,
            seq=seq,
            base_seq=action.base_seq,
            services=changes.upserted,
            removed=changes.removed,
            observed_ms=action.observed_ms,
        )
        return report, changes

    def _granted(
        self, services: tuple[Service, ...], keys: Collection[str] | None
    ) -> tuple[Service, ...]:
        """``services`` as the grant allows: the ungranted left out, and the policy of a
        cluster that may not set one dropped (the registry would refuse the report)."""
        grant = self.grant
        if grant is None:
            return services
        out = []
        notes: dict[str, str] = {}
        for service in services:
            if not grant.exported(service.key):
                notes[service.key] = "not granted to this cluster: left out"
                continue
            if service.policy is not None and not grant.policy_annotations:
                notes[service.key] = "this cluster may not set policy: reported without it"
                service = service.model_copy(update={"policy": None})
            out.append(service)
        for key, why in notes.items():
            if self._left_out.get(key) != why:
                self.log.warning("not reported as is", service=key, why=why)
        if keys is None:
            self._left_out = notes
        else:
            asked = set(keys)
            self._left_out = {k: w for k, w in self._left_out.items() if k not in asked} | notes
        return tuple(out)

    def _learned(self, grant: Grant) -> None:
        if grant == self.grant:
            return
        self.log.info("grant", exports=list(grant.exports), policy=grant.policy_annotations)
        self.grant = grant
        self.changed(None)  # what is left out may differ: compare everything

    async def _grant_loop(self, stop: asyncio.Event) -> None:
        """Learn the grant before the first report and look again now and then (an
        operator may widen it); a refusal that carries one teaches it at once."""
        while not stop.is_set():
            try:
                self._learned(await self.client.grant())
                wait = self.grant_refresh_s
            except ReportError as exc:
                self.log.warning("cannot read this cluster's grant", error=str(exc))
                # Unreachable: soon again. Refused (a registry without grants): the
                # registry's own 403, which carries the grant, teaches it meanwhile.
                refused = isinstance(exc, Refused)
                wait = self.grant_refresh_s if refused else min(self.grant_refresh_s, 5.0)
            self._grant_asked.set()
            await sleep_or_stop(stop, wait)

    async def _heartbeat(self, seq: int) -> schedule.Event:
        try:
            held = await self.client.heartbeat(seq)
        except Throttled as exc:  # the registry never limits heartbeats; a proxy might
            self.throttled += 1
            return schedule.Throttled(exc.retry_after_s)
        except ReportError as exc:
            return self._failed(exc, seq=0)
        if not held:
            self.log.info("registry lacks our report; sending the whole state")
            self.resyncs += 1
            return schedule.Lost()
        self.heartbeats += 1
        if self._in_doubt is not None and self._in_doubt[0] == seq:
            delta.amend(self.acked, self._in_doubt[1])  # the failed delta landed after all
            self._in_doubt = None
        return schedule.Renewed()

    def _failed(self, exc: ReportError, *, seq: int) -> schedule.Event:
        refused = isinstance(exc, Refused)
        if isinstance(exc, Refused) and exc.grant is not None:
            self._learned(exc.grant)
        level = self.log.error if refused else self.log.warning
        then = "ask whether it landed" if self.schedule.holding else "send the whole state again"
        level("registry call failed", then=then, error=str(exc))
        self.resyncs += 1
        return schedule.Failed(refused=refused, seq=seq, store=isinstance(exc, StoreUnavailable))

    async def _wait(self, stop: asyncio.Event, timeout: float) -> None:
        """Sleep ``timeout``, waking early for a stop or a change."""
        if self._inbox:
            return
        await _first(
            stop.wait(),
            self._woken.wait(),
            timeout=None if math.isinf(timeout) else max(0.0, timeout),
        )

    async def run(self, stop: asyncio.Event) -> None:
        self.source.subscribe(self._source_changed)
        tasks = [
            asyncio.create_task(self._supervise_probes(stop)),
            asyncio.create_task(self._report_loop(stop)),
            asyncio.create_task(self._grant_loop(stop)),
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
