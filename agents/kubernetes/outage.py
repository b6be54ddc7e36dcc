"""What the cluster's reporter may do while its apiserver is out: a pure judgement.

A cluster's own apiserver being down is not its workloads being down: pods keep serving
while a control plane restarts or is upgraded. Before this, the leader that could not
renew its Lease stopped reporting, the registry lease ran out after a few seconds, and
the cluster left the answers. Now the leader *holds* — renews the registry lease with
heartbeats for the state the registry already has — for at most ``grace_s``, and sends
no report at all meanwhile: its caches cannot be known to be current.

Three standings, judged from facts the I/O shell keeps (time ``now`` is monotonic)::

    report   we hold the leader Lease (renewed within the deadline) and every watch is
             fresh: report as usual
    hold     heartbeats only, no report, until ``out_since + grace_s``; either
             · the Lease is renewed but a watch is stale (it failed, or has not yet
               resynced since the apiserver returned), or
             · the Lease could not be renewed because the apiserver gave no answer
               (connection errors, timeouts, 5xx, 429) — never after an answer that
               refused us (401/403 …) or named another holder (409: we stop at once)
    standby  anything else: another pod holds the Lease, the apiserver refused us, or
             the grace ran out

Why a hold cannot be a split brain: while the apiserver is down no pod can take the
Lease. If only this pod is cut off and another takes over, the new leader sends a whole
state with a new seq; a heartbeat renews the registry lease only for the seq the registry
holds, so our next heartbeat is refused (409), after which we send nothing (a hold never
sends a whole state). When the apiserver answers again, a renewal that finds the Lease
taken is a conflict: we stand by at once.

``out_since`` is the earliest of: the oldest stale watch's first failure, and — once the
Lease is past its renew deadline — the first Lease call since the last answer. So the
grace counts from when the apiserver went away, through its return and the resync.

:class:`Paused` is the other half: Lease time that stands still while the Lease watch
is stale, so that no node Lease is judged expired for want of renewals nobody could
deliver, and none expires at once when the apiserver returns before its agent renews it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

Standing = Literal["report", "hold", "standby"]


@dataclass(frozen=True, slots=True)
class Verdict:
    standing: Standing
    until: float
    """When the verdict changes by itself (inf: only a new fact changes it)."""
    reason: str


def judge(
    *,
    holder: bool,
    renewed_at: float | None,
    refused: bool,
    unanswered_since: float | None,
    stale_since: float | None,
    now: float,
    deadline_s: float,
    grace_s: float,
) -> Verdict:
    """The standing of an agent pod at ``now``.

    ``holder``: the Lease names us and no answer since our last renewal said otherwise;
    ``renewed_at``: when our last successful renewal was sent; ``refused``: the apiserver
    answered a Lease call since then with a refusal; ``unanswered_since``: the first Lease
    call since the last answered one (None: every call was answered);
    ``stale_since``: the first failure of the oldest watch not yet resynced (None: all
    fresh).
    """
    if not holder or renewed_at is None:
        return Verdict("standby", math.inf, "another pod holds the leader Lease, or none")
    deadline = renewed_at + deadline_s
    if now < deadline:
        if stale_since is None:
            return Verdict("report", deadline, "leader")
        out, why = stale_since, "watches not resynced since the apiserver failed"
    elif refused:
        return Verdict("standby", math.inf, "the apiserver refused the Lease renewal")
    elif unanswered_since is None:
        return Verdict("standby", math.inf, "the leader Lease was not renewed in time")
    else:
        out = unanswered_since if stale_since is None else min(unanswered_since, stale_since)
        why = "the apiserver does not answer the Lease renewal"
    end = out + grace_s
    if now >= end:
        return Verdict("standby", math.inf, f"apiserver out for longer than {grace_s:g}s")
    until = min(end, deadline) if now < deadline else end
    return Verdict("hold", until, why)


@dataclass(frozen=True, slots=True)
class Paused:
    """Monotonic time that stands still while paused: ``at(now)`` is ``now`` less every
    paused stretch."""

    total: float = 0.0
    """Seconds stood still in finished pauses."""
    since: float | None = None
    """When the current pause began (None: running)."""

    def at(self, now: float) -> float:
        current = now - self.since if self.since is not None else 0.0
        return now - self.total - current

    def pause(self, now: float) -> Paused:
        return self if self.since is not None else replace(self, since=now)

    def resume(self, now: float) -> Paused:
        if self.since is None:
            return self
        return Paused(total=self.total + max(0.0, now - self.since), since=None)
