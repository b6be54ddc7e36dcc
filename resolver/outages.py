"""Telling a control-plane outage from clusters going down: pure, driven by the sync loop.

A cluster leaves the answers when its lease runs out: its agents stopped renewing it. But
the renewal travels agent → registry API → Redis → resolver, and when the middle of that
path breaks, every lease runs out at once although every cluster is fine. Routing the
whole world to last-known-good answers (or to nothing) because the registry restarted
would turn a control-plane hiccup into a data-plane outage. So the resolver recognises
three kinds of control-plane outage and forgives the leases for their duration (see
:func:`registry.health.effective_last_seen`):

``redis unreachable``
    this resolver could not read Redis (down, frozen, restarting, failing over). Its sync
    time stands still meanwhile, so nothing expires; when it reads again, the leases
    that were fresh when it lost Redis run a whole TTL from then, giving agents time to
    renew through a registry that was cut off just as long. Shorter than a heartbeat
    interval (a third of the TTL), no heartbeat can have been lost: nothing is forgiven.
``registry silent``
    every registry replica writes its Redis time into ``gdns:registry`` once a second;
    when none has for longer than :data:`REGISTRY_GRACE_DIVISOR` of the TTL, nobody is
    taking heartbeats, and the leases fresh when the registry fell silent are held. A
    beacon that vanishes (Redis lost it) counts as silent since the last one seen.
``most clusters stale at once``
    more than ``mass_fraction`` of the clusters that were live one lease TTL ago are
    stale now (a partition between the registry and the clusters, a registry rejecting
    every agent): they went stale within one lease of each other, which is "at once" for
    leases renewed a third of a TTL apart. The last picture is kept — every one of them
    is held from when the first went stale — as Kubernetes' node lifecycle controller
    stops evicting when a whole zone goes NotReady; the outage ends when enough of them
    report again, and the rest then get one TTL to do the same.

A single cluster that stops reporting while the others report still leaves the answers
within the lease TTL: none of the three applies to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from registry.health import Outage, effective_last_seen, lease_fresh

REDIS_UNREACHABLE = "redis unreachable"
REGISTRY_SILENT = "registry silent"
MASS_EXPIRY = "most clusters stale at once"
CAUSES = (REDIS_UNREACHABLE, REGISTRY_SILENT, MASS_EXPIRY)

REGISTRY_GRACE_DIVISOR = 3
"""The registry is silent when its beacon is older than the lease TTL over this (2 s of
6 s: two missed beacons, as registries write one a second)."""


@dataclass(frozen=True, slots=True)
class Transition:
    """An outage that began or ended at this judgement (for the log and the metrics)."""

    event: str
    """``began`` or ``ended``."""
    outage: Outage


class ControlPlane:
    def __init__(self, *, lease_ttl_ms: int, mass_fraction: float = 0.5) -> None:
        self.lease_ttl_ms = lease_ttl_ms
        self.mass_fraction = mass_fraction
        self.min_outage_ms = lease_ttl_ms // 3
        self.registry_grace_ms = lease_ttl_ms // REGISTRY_GRACE_DIVISOR
        self._ended: list[Outage] = []
        self._registry: Outage | None = None
        self._mass: Outage | None = None
        self._unreachable_since: int | None = None
        self._beacon_ms: int | None = None
        self._first_ms: int | None = None
        """The first judgement: the rule cannot speak for the time before it."""

    @property
    def outages(self) -> tuple[Outage, ...]:
        """Every outage that still affects some lease, in order of start."""
        ongoing = [o for o in (self._registry, self._mass) if o is not None]
        return tuple(sorted(self._ended + ongoing, key=lambda o: o.start_ms))

    @property
    def ongoing(self) -> tuple[Outage, ...]:
        return tuple(o for o in (self._registry, self._mass) if o is not None)

    def unreachable(self, last_sync_ms: int) -> None:
        """This resolver failed to read Redis; its picture is as of ``last_sync_ms``."""
        if self._unreachable_since is None and last_sync_ms > 0:
            self._unreachable_since = last_sync_ms

    def observe(
        self, now_ms: int, last_seen: Mapping[str, int], registry_alive_ms: int | None
    ) -> list[Transition]:
        """A successful read at ``now_ms`` (Redis clock): every cluster's last heartbeat
        and the registry's beacon (None: no registry has written one)."""
        events: list[Transition] = []
        if self._unreachable_since is not None:
            start, self._unreachable_since = self._unreachable_since, None
            if now_ms - start >= self.min_outage_ms:
                ended = Outage(start, now_ms, REDIS_UNREACHABLE)
                self._ended.append(ended)
                events.append(Transition("ended", ended))
        if registry_alive_ms is None or registry_alive_ms < (self._beacon_ms or 0):
            # A beacon seen once and now gone or older: Redis lost it (restarted empty,
            # failed over) and no registry has written it since.
            registry_alive_ms = self._beacon_ms
        self._beacon_ms = registry_alive_ms
        if registry_alive_ms is not None:
            silent = now_ms - registry_alive_ms > self.registry_grace_ms
            if silent and self._registry is None:
                self._registry = Outage(registry_alive_ms, None, REGISTRY_SILENT)
                events.append(Transition("began", self._registry))
            elif not silent and self._registry is not None:
                events += self._end("_registry", now_ms)
        events += self._judge_mass(now_ms, last_seen)
        self._ended = [o for o in self._ended if (o.end_ms or 0) + self.lease_ttl_ms >= now_ms]
        return events

    def _judge_mass(self, now_ms: int, last_seen: Mapping[str, int]) -> list[Transition]:
        if self._first_ms is None:
            self._first_ms = now_ms
        ttl = self.lease_ttl_ms
        forgiven = [o for o in self.outages if o is not self._mass]

        def seen_as(seen: int) -> int:
            return effective_last_seen(seen, ttl, forgiven)

        if self._mass is not None:
            # Over once most of those live when it began report again.
            reference = self._mass.start_ms
        else:
            # "At once" is within one lease: heartbeats are a third of it apart, so the
            # clusters of one partition expire over a second or two, not in one instant.
            reference = max(now_ms - ttl, self._first_ms)
        were_live = [
            seen_as(s) for s in last_seen.values() if lease_fresh(seen_as(s), reference, ttl)
        ]
        stale = [s for s in were_live if not lease_fresh(s, now_ms, ttl)]
        mass = len(were_live) >= 2 and len(stale) > self.mass_fraction * len(were_live)
        if mass and self._mass is None:
            # From when the first of them went stale, so that every one is held.
            self._mass = Outage(min(s + ttl for s in stale), None, MASS_EXPIRY)
            return [Transition("began", self._mass)]
        if not mass and self._mass is not None:
            return self._end("_mass", now_ms)
        return []

    def _end(self, which: str, now_ms: int) -> list[Transition]:
        outage: Outage = getattr(self, which)
        setattr(self, which, None)
        ended = Outage(outage.start_ms, now_ms, outage.cause)
        self._ended.append(ended)
        return [Transition("ended", ended)]
