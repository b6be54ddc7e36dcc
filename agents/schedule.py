"""When the agent reports, what it reports, and when it renews its lease: a pure state machine.

The agent's report loop (:meth:`agents.agent.Agent._report_loop`) only does I/O: it feeds
:func:`apply` what happened (a source named changed services, time passed, the registry
answered) and carries out what :func:`decide` returns. Time comes in as ``now``
(monotonic seconds) and randomness as ``rng``, so every schedule below is tested with a
fake clock (``tests/agents/test_schedule.py``)::

    inactive ──ready and leading──▶ need_full ──▶ SendWhole ──ok──▶ in sync
        ▲                             ▲    ▲                          │
        └─ not ready / not leading ───┘    │     changed keys ─▶ SendDelta(keys) ─ok─┐
                                           │     nothing changed ─▶ SendHeartbeat ─ok─┤
                                           │                                         │
                                           └─ 409 resync · stale seq · error · ◀─────┘
                                              heartbeat 409 (any doubt)

* **Whole state first, deltas after.** A delta names the seq the registry acknowledged
  last (``base_seq``); the registry applies it only on exactly that report. Any doubt —
  a 409 asking for a resync, a stale seq, an error whose outcome is unknown, a heartbeat
  the registry refuses (it lost our report), a change of leadership or readiness — makes
  the next report the whole state, which heals whatever the registry holds.
* **Coalescing.** A report goes ``coalesce_s`` after the first change it carries (a burst
  of watch events or probe verdicts becomes one report) and at least
  ``min_report_interval_s`` after the previous report was sent (a rolling update of a
  hundred pods becomes a handful of reports). Changes that arrive while a report is in
  flight wait for the next one.
* **Heartbeats** renew the lease ``heartbeat_interval_s`` after the last successful call;
  a report renews it too.
* **Throttled** (429: the cluster is over its report rate at the registry): nothing was
  written, so nothing is in doubt. What the refused report carried goes back to the
  pending changes, reports wait until the time the registry named (``Retry-After``,
  at most ``backoff_refused_max_s``), and heartbeats go on meanwhile so the lease does
  not run out while the reports wait.
* **Back-off** after an error: exponential from ``backoff_first_s``, jittered by ``rng``
  to spread a fleet of agents, capped at ``backoff_max_s`` (``backoff_refused_max_s`` when
  the registry refused us: our configuration is wrong and hammering will not fix it;
  ``backoff_store_max_s`` when it answered 503: its Redis is failing over, the registry
  answers that fast, and a write that waits the full back-off after writes resumed is a
  change reaching DNS seconds late).

* **Holding** (a Kubernetes leader whose apiserver is out, :mod:`agents.kubernetes.outage`):
  heartbeats renew the lease for the seq the registry acknowledged, and no whole state
  is sent, because the source's picture may be stale. Only what the agent learns on its
  own goes out: a service whose probe verdicts changed (``Changed(probed=True)``: the
  node-local probes still run) is sent as a delta over the last known objects. A failed
  heartbeat backs off and tries again (it changes nothing the registry holds). A failed
  delta leaves its outcome unknown, so the next call is a heartbeat on the delta's seq:
  200 means it landed (the registry acknowledged it), 409 that it did not (send it
  again). Any other refusal (409 on our acknowledged seq: another reporter wrote, or the
  registry lost our report) ends the heartbeats. When the hold ends every service is
  compared with what was acknowledged.

``observed_ms`` (wall-clock ms, stamped by the shell when a source or probe notified)
travels with the pending changes: a report carries the oldest one, for the propagation
histograms; a failed report hands its ``observed_ms`` to the whole state that replaces it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

# -- settings ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timing:
    heartbeat_interval_s: float = 2.0
    coalesce_s: float = 0.02
    min_report_interval_s: float = 0.05
    backoff_first_s: float = 0.2
    backoff_max_s: float = 5.0
    backoff_store_max_s: float = 1.0
    backoff_refused_max_s: float = 30.0


# -- events: what happened --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Changed:
    """A source or a probe said these services (``<namespace>/<name>``) may differ."""

    keys: frozenset[str] | None
    """None: anything may have changed (a relist, leadership, the node Leases)."""
    observed_ms: int
    probed: bool = False
    """This agent's own probes changed a verdict (sent even while holding)."""


@dataclass(frozen=True, slots=True)
class Active:
    """Whether the source is ready and this agent is the cluster's reporter."""

    active: bool


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed; nothing else happened."""


@dataclass(frozen=True, slots=True)
class Reported:
    """200: the registry holds report ``seq``."""

    seq: int


@dataclass(frozen=True, slots=True)
class Unchanged:
    """The delta turned out empty (nothing differs from what was acknowledged): not sent."""


@dataclass(frozen=True, slots=True)
class Resync:
    """409 with ``resync``: the registry does not hold our ``base_seq``."""

    seq: int
    stored_seq: int | None = None


@dataclass(frozen=True, slots=True)
class Stale:
    """409 with ``stored_seq``: the registry holds a newer seq (an earlier run of ours)."""

    seq: int
    stored_seq: int


@dataclass(frozen=True, slots=True)
class Failed:
    """A report or heartbeat failed: unavailable (outcome unknown) or refused (4xx)."""

    refused: bool = False
    seq: int = 0
    """The seq the failed report used (the registry may hold it): 0 for a heartbeat."""
    store: bool = False
    """503: the registry answered; its store was unavailable (retry soon)."""


@dataclass(frozen=True, slots=True)
class Throttled:
    """429 on a report: nothing was written; send again after ``retry_after_s``."""

    retry_after_s: float


@dataclass(frozen=True, slots=True)
class Renewed:
    """200 on a heartbeat."""


@dataclass(frozen=True, slots=True)
class Lost:
    """409 on a heartbeat: the registry does not hold our report (it lost its data)."""


@dataclass(frozen=True, slots=True)
class Holding:
    """Whether the active source may only renew the lease (its picture may be stale)."""

    holding: bool


Event = (
    Changed
    | Active
    | Holding
    | Tick
    | Reported
    | Unchanged
    | Resync
    | Stale
    | Failed
    | Throttled
    | Renewed
    | Lost
)


# -- actions: what to do next -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendWhole:
    min_seq: int
    """The report's seq is at least this (the shell takes ``max(min_seq, wall ns)``)."""
    observed_ms: int | None


@dataclass(frozen=True, slots=True)
class SendDelta:
    min_seq: int
    base_seq: int
    keys: frozenset[str] | None
    """The services to compare with what was acknowledged; None: all of them."""
    observed_ms: int | None


@dataclass(frozen=True, slots=True)
class SendHeartbeat:
    seq: int


@dataclass(frozen=True, slots=True)
class Wait:
    until: float
    """Monotonic time to look again (an event wakes the shell sooner); inf: only an event."""


Action = SendWhole | SendDelta | SendHeartbeat | Wait
Call = SendWhole | SendDelta | SendHeartbeat


# -- state ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class State:
    active: bool = False
    need_full: bool = True
    pending: frozenset[str] = frozenset()
    """Services changed since the last report was built."""
    pending_all: bool = False
    """Anything may have changed since the last report was built."""
    since: float | None = None
    """When the oldest unreported change (or the need for a whole state) was noticed."""
    observed_ms: int | None = None
    """Wall-clock ms at which the oldest unreported change was observed."""
    in_flight: Call | None = None
    """The call whose answer we await."""
    seq: int = 0
    """The highest seq we used or the registry showed us."""
    acked_seq: int | None = None
    """The seq the registry acknowledged last: the base of the next delta."""
    sent_at: float = -math.inf
    """When the last report was sent (successful or not)."""
    renewed_at: float = -math.inf
    """When the lease was last renewed (a successful report or heartbeat)."""
    backoff_s: float = 0.0
    """The current back-off step; 0 after a success."""
    retry_at: float = -math.inf
    reports_at: float = -math.inf
    """Reports (not heartbeats) wait until then: the registry throttled us (429)."""
    holding: bool = False
    """Heartbeats and probe deltas only: see :class:`Holding`."""
    probed: frozenset[str] = frozenset()
    """While holding: services whose probe verdicts changed, not yet sent."""
    doubt_seq: int | None = None
    """While holding: the seq of a delta whose outcome is unknown (it failed)."""

    @property
    def has_pending(self) -> bool:
        return self.need_full or self.pending_all or bool(self.pending)


def _earliest(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _in_flight_observed(state: State) -> int | None:
    call = state.in_flight
    return None if isinstance(call, SendHeartbeat | None) else call.observed_ms


def _doubt(state: State, now: float, *, seq: int = 0, stored_seq: int | None = None) -> State:
    """The next report is the whole state; it carries the changes of the lost one."""
    return replace(
        state,
        need_full=True,
        pending=frozenset(),
        pending_all=False,
        since=state.since if state.since is not None else now,
        observed_ms=_earliest(state.observed_ms, _in_flight_observed(state)),
        in_flight=None,
        seq=max(state.seq, seq, stored_seq or 0),
    )


def apply(state: State, event: Event, *, now: float, timing: Timing, rng: random.Random) -> State:
    """The state after ``event`` happened at ``now``."""
    match event:
        case Changed(keys=keys, observed_ms=observed_ms, probed=probed):
            if not state.active or keys == frozenset():
                return state  # becoming active sends the whole state anyway
            return replace(
                state,
                pending_all=state.pending_all or keys is None,
                pending=state.pending if keys is None else state.pending | keys,
                probed=state.probed | keys if state.holding and probed and keys else state.probed,
                since=state.since if state.since is not None else now,
                observed_ms=_earliest(state.observed_ms, observed_ms),
            )
        case Active(active=active):
            if active == state.active:
                return state
            # Whatever we believed the registry holds, another reporter may have written
            # since (or the source was not ready): start again from a whole state.
            return State(
                active=active,
                seq=state.seq,
                acked_seq=state.acked_seq,
                since=now if active else None,
                in_flight=state.in_flight,
            )
        case Holding(holding=holding):
            if holding == state.holding:
                return state
            if holding or not state.active:
                return replace(state, holding=holding, probed=frozenset(), doubt_seq=None)
            # Fresh again: anything may have changed while we held. A delta still in
            # doubt is settled by the whole comparison (a failure of it sends a whole).
            return replace(
                state,
                holding=False,
                probed=frozenset(),
                doubt_seq=None,
                need_full=state.need_full or state.doubt_seq is not None,
                pending_all=True,
                since=state.since if state.since is not None else now,
            )
        case Tick():
            return state
        case Reported(seq=seq):
            whole = isinstance(state.in_flight, SendWhole)
            return replace(
                state,
                need_full=state.need_full and not whole,
                in_flight=None,
                seq=max(state.seq, seq),
                acked_seq=seq,
                renewed_at=now,
                backoff_s=0.0,
            )
        case Unchanged():
            return replace(state, in_flight=None)
        case Resync(seq=seq, stored_seq=stored):
            return _doubt(state, now, seq=seq, stored_seq=stored)
        case Stale(seq=seq, stored_seq=stored):
            return _doubt(state, now, seq=seq, stored_seq=stored)
        case Failed(refused=refused, seq=seq, store=store):
            cap = (
                timing.backoff_refused_max_s
                if refused
                else timing.backoff_store_max_s
                if store
                else timing.backoff_max_s
            )
            step = min(state.backoff_s * 2 or timing.backoff_first_s, cap)
            retry_at = now + step * (0.5 + rng.random())
            if state.holding and isinstance(state.in_flight, SendHeartbeat):
                # A heartbeat changes nothing the registry holds: keep holding.
                return replace(state, in_flight=None, backoff_s=step, retry_at=retry_at)
            if state.holding and isinstance(state.in_flight, SendDelta):
                # Its outcome is unknown: ask with a heartbeat on its seq, then resend.
                return replace(
                    state,
                    in_flight=None,
                    probed=state.probed | (state.in_flight.keys or frozenset()),
                    doubt_seq=seq,
                    seq=max(state.seq, seq),
                    backoff_s=step,
                    retry_at=retry_at,
                )
            doubted = _doubt(state, now, seq=seq)
            return replace(doubted, backoff_s=step, retry_at=retry_at)
        case Throttled(retry_after_s=wait):
            return _throttled(state, now, min(max(wait, 0.0), timing.backoff_refused_max_s))
        case Renewed():
            if _asks_doubt(state):
                # The failed delta landed: the registry holds its seq.
                return replace(
                    state,
                    in_flight=None,
                    renewed_at=now,
                    backoff_s=0.0,
                    acked_seq=state.doubt_seq,
                    doubt_seq=None,
                )
            return replace(state, in_flight=None, renewed_at=now, backoff_s=0.0)
        case Lost():
            if _asks_doubt(state):
                # The failed delta did not land: the next delta carries its services.
                return replace(state, in_flight=None, doubt_seq=None)
            return _doubt(state, now)
    raise AssertionError(f"unknown event {event!r}")


def _throttled(state: State, now: float, wait: float) -> State:
    """The refused report's changes are pending again, on the same base (nothing landed)."""
    call = state.in_flight
    waiting = replace(state, in_flight=None, reports_at=now + wait)
    if isinstance(call, SendHeartbeat | None):
        return replace(waiting, retry_at=now + wait)
    since = state.since if state.since is not None else now
    observed_ms = _earliest(state.observed_ms, call.observed_ms)
    if isinstance(call, SendWhole):
        return replace(waiting, since=since, observed_ms=observed_ms)
    if state.holding:
        return replace(
            waiting,
            probed=state.probed | (call.keys or frozenset()),
            since=since,
            observed_ms=observed_ms,
        )
    return replace(
        waiting,
        pending=state.pending | (call.keys or frozenset()),
        pending_all=state.pending_all or call.keys is None,
        since=since,
        observed_ms=observed_ms,
    )


def _asks_doubt(state: State) -> bool:
    """The call in flight is the heartbeat asking whether a failed delta landed."""
    call = state.in_flight
    return isinstance(call, SendHeartbeat) and call.seq == state.doubt_seq


def decide(state: State, *, now: float, timing: Timing) -> tuple[State, Action]:
    """What to do at ``now``: a call (recorded as in flight) or how long to wait."""
    if state.in_flight is not None:
        return state, Wait(math.inf)
    if not state.active:
        # Readiness and leadership announce themselves; look again now and then anyway.
        return state, Wait(now + timing.heartbeat_interval_s)
    if now < state.retry_at:
        return state, Wait(state.retry_at)
    throttled = now < state.reports_at
    if state.holding:
        if state.need_full or state.acked_seq is None:
            return state, Wait(math.inf)  # only a fresh picture may be sent: wait for it
        if state.doubt_seq is not None:
            beat = SendHeartbeat(seq=state.doubt_seq)
            return replace(state, in_flight=beat), beat
        if state.probed and not throttled:
            due = max(
                (state.since if state.since is not None else now) + timing.coalesce_s,
                state.sent_at + timing.min_report_interval_s,
            )
            if now < due:
                return state, Wait(due)
            probe_delta = SendDelta(
                min_seq=state.seq + 1,
                base_seq=state.acked_seq,
                keys=state.probed,
                observed_ms=state.observed_ms,
            )
            return replace(state, probed=frozenset(), in_flight=probe_delta, sent_at=now), (
                probe_delta
            )
        return _heartbeat(state, now=now, timing=timing, wake=state.reports_at)
    if state.has_pending and throttled:
        if state.acked_seq is None:
            return state, Wait(state.reports_at)  # no lease of ours to renew yet
        return _heartbeat(state, now=now, timing=timing, wake=state.reports_at)
    if state.has_pending:
        since = state.since if state.since is not None else now
        due = max(since + timing.coalesce_s, state.sent_at + timing.min_report_interval_s)
        if now < due:
            return state, Wait(due)
        call: Call
        if state.need_full or state.acked_seq is None:
            call = SendWhole(min_seq=state.seq + 1, observed_ms=state.observed_ms)
        else:
            call = SendDelta(
                min_seq=state.seq + 1,
                base_seq=state.acked_seq,
                keys=None if state.pending_all else state.pending,
                observed_ms=state.observed_ms,
            )
        sent = replace(
            state,
            pending=frozenset(),
            pending_all=False,
            since=None,
            observed_ms=None,
            in_flight=call,
            sent_at=now,
        )
        return sent, call
    return _heartbeat(state, now=now, timing=timing)


def _heartbeat(
    state: State, *, now: float, timing: Timing, wake: float = math.inf
) -> tuple[State, Action]:
    """Renew the lease when it is due; else wait for that (or ``wake``, if sooner)."""
    due = state.renewed_at + timing.heartbeat_interval_s
    if now < due:
        return state, Wait(due if wake <= now else min(due, wake))
    assert state.acked_seq is not None  # in sync: a whole state was acknowledged
    beat = SendHeartbeat(seq=state.acked_seq)
    return replace(state, in_flight=beat), beat


def step(
    state: State, event: Event, *, now: float, timing: Timing, rng: random.Random
) -> tuple[State, Action]:
    """:func:`apply` then :func:`decide`."""
    return decide(apply(state, event, now=now, timing=timing, rng=rng), now=now, timing=timing)
