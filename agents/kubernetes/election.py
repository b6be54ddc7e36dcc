"""Lease expiry and leader election over coordination.k8s.io Leases: pure decisions.

Two kinds of Lease live in the agent's namespace:

* one **leader** Lease per cluster: its holder reports cluster-scoped data (the Service
  records, load-balancer addresses, endpoints without a node) to the registry;
* one **node** Lease per agent pod's node, renewed by that pod, carrying its probe
  verdicts (:mod:`.nodes`); when it expires, the node's endpoints leave the answers.

Expiry is judged as client-go's leaderelection does, by *local observation*, never by
comparing another machine's ``renewTime`` with our wall clock: a record expires
``leaseDurationSeconds`` after we first saw it in its current form (holder and
renewTime). On the very first sight (an agent that just started) we credit the age its
``renewTime`` shows, clamped to ``[0, duration]``, so a node that died long ago is not
granted a fresh lease by a new leader. Times are passed in: ``now`` is monotonic seconds,
``wall_ms`` the wall clock.

Why a Kubernetes Lease rather than a lease held by the registry: the registry's model is
one writer per cluster, and the Lease is the mechanism Kubernetes gives every controller
(RBAC-scoped to one namespace, visible with ``kubectl get lease``, no new registry API).
A leader that cannot renew within ``renew_deadline_s`` stops reporting before any other
pod may take over, so two pods never report at once while the apiserver works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agents.kubernetes.objects import Lease


@dataclass(frozen=True, slots=True)
class Seen:
    holder: str | None
    renew_ms: int | None
    duration_s: int | None
    since: float
    """Monotonic time from which this form of the record counts."""


def observe(previous: Seen | None, lease: Lease, *, now: float, wall_ms: int) -> Seen:
    if (
        previous is not None
        and previous.holder == lease.holder
        and previous.renew_ms == lease.renew_ms
        and previous.duration_s == lease.duration_s
    ):
        return previous
    age = 0.0
    if previous is None and lease.renew_ms is not None and lease.duration_s:
        age = min(max((wall_ms - lease.renew_ms) / 1000, 0.0), float(lease.duration_s))
    return Seen(lease.holder, lease.renew_ms, lease.duration_s, since=now - age)


def expires_at(seen: Seen) -> float:
    if seen.holder is None or not seen.duration_s:
        return seen.since
    return seen.since + seen.duration_s


def expired(seen: Seen, now: float) -> bool:
    return now >= expires_at(seen)


@dataclass(frozen=True, slots=True)
class Step:
    kind: Literal["create", "take", "renew", "wait"]
    at: float
    """For ``wait``: when to look again (a change to the Lease wakes us sooner)."""


def decide(
    seen: Seen | None, *, me: str, renewed_at: float | None, now: float, renew_s: float
) -> Step:
    """What a candidate does next about the leader Lease.

    ``seen`` is None when the Lease does not exist; ``renewed_at`` is when our own last
    successful write was *sent* (None: we hold nothing).
    """
    if seen is None:
        return Step("create", now)
    if seen.holder == me and renewed_at is not None:
        due = renewed_at + renew_s
        return Step("renew", now) if now >= due else Step("wait", due)
    if seen.holder == me or expired(seen, now):
        return Step("take", now)
    return Step("wait", expires_at(seen))


def leading(
    seen: Seen | None, *, me: str, renewed_at: float | None, now: float, deadline_s: float
) -> bool:
    """Whether we may act as leader: we hold the Lease and renewed it recently enough."""
    return (
        seen is not None
        and seen.holder == me
        and renewed_at is not None
        and now - renewed_at < deadline_s
    )
